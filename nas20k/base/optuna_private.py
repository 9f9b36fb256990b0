"""The private Optuna calls nas20k needs, in one place, each with why (checked against Optuna 5.1.0).

A leaf module: readers and runner both use it. If Optuna grows a public way, the call changes here only.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> BaseStorage:
    """`Study._storage`: a loaded study has no public accessor for its storage, which we need to open its sibling
    studies (the `:confirm` runs, the planning lock) on the same connection pool instead of a second engine."""
    return study._storage


def rdb_of(study: optuna.Study) -> BaseStorage:
    """The RDB storage under `Study._storage` (`_CachedStorage._backend` for an RDBStorage): a search's single
    worker trains on the command's own storage, so a machine holds one connection pool, not two."""
    return getattr(study._storage, "_backend", study._storage)


def requeue_behind(study: optuna.Study, waiting: list[FrozenTrial]) -> None:
    """Move queued trials to the back of the queue: `Study.optimize` takes the oldest WAITING trial first, and
    Optuna offers no way to reorder or delete one. Each is marked failed with status "requeued" (a record, not a
    run: nothing trained) and queued again with its parameters and attributes. Needs `FrozenTrial._trial_id` to
    change a trial's state through the storage, and the system attr "fixed_params" where `enqueue_trial` keeps a
    queued trial's parameters (its `params` stay empty until it runs)."""
    storage = storage_of(study)
    for t in waiting:
        if storage.get_trial(t._trial_id).state != TrialState.WAITING:  # another machine's worker took it meanwhile
            continue
        storage.set_trial_user_attr(t._trial_id, "status", "requeued")
        if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
            enqueue_again(study, t)


def enqueue_again(study: optuna.Study, t: FrozenTrial) -> None:
    """Queue `t`'s parameters and attributes (not its status) again, as a new WAITING trial."""
    study.enqueue_trial(queued_params(t), user_attrs={k: v for k, v in t.user_attrs.items() if k != "status"})


def trial_id(trial: FrozenTrial) -> int:
    """`FrozenTrial._trial_id`: the storage's key of a trial, which every storage call that changes a trial takes
    (failing a trial whose worker is gone, `lost.lose_trial`); a FrozenTrial has only its number publicly."""
    return trial._trial_id


# The private RDBStorage methods that Optuna's `_CachedStorage` (which `optuna.load_study` wraps every RDBStorage
# in) calls on its backend instead of the public ones, and `_get_stale_trial_ids`, which `fail_stale_trials` calls:
# `outage.PatientStorage` must retry these too, or a cached study's reads and trial creations would not ride out
# an outage (checked against Optuna 5.1.0).
CACHED_BACKEND_CALLS = (
    "_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id", "_get_stale_trial_ids",
)


def queued_params(t: FrozenTrial) -> dict:
    """The parameters a queued trial was given (`enqueue_trial` keeps them in the system attr "fixed_params"; its
    public `params` stay empty until it runs)."""
    return t.system_attrs.get("fixed_params", {})


def queue_retry(study: optuna.Study, t: FrozenTrial, user_attrs: dict) -> None:
    """Queue a lost trial again with its parameters and Optuna's own retry marks (the system attrs
    `RetryFailedTrialCallback.retried_trial_number` / `retry_history` read), as `enqueue_trial` would store them."""
    system = {"fixed_params": {**queued_params(t), **t.params},
              "failed_trial": t.system_attrs.get("failed_trial", t.number),
              "retry_history": [*t.system_attrs.get("retry_history", []), t.number]}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=system, user_attrs=user_attrs))


CREATE_TRIAL_ROW, STALE_TRIAL_IDS = "_create_new_trial", "_get_stale_trial_ids"


def create_trial_row(base: type, storage: BaseStorage, study_id: int, template: FrozenTrial | None) -> FrozenTrial:
    """`RDBStorage._create_new_trial`: what `create_new_trial` and `_CachedStorage` call, returning the whole new
    trial (a popped queued trial comes back RUNNING), so `outage.patient` retries and claims it in one place."""
    return getattr(base, CREATE_TRIAL_ROW)(storage, study_id, template)


def stale_trial_ids(base: type, storage: BaseStorage, study_id: int) -> list[int]:
    """`RDBStorage._get_stale_trial_ids`: the trials `fail_stale_trials` is about to fail; `outage.patient` marks
    each with why before it does."""
    return getattr(base, STALE_TRIAL_IDS)(storage, study_id)


def check_schema(storage: RDBStorage) -> None:
    """What `RDBStorage(..., skip_compatibility_check=False)` checks, one connection at a time. Optuna's check holds
    a session's connection while it opens a second: a process whose pool is one connection (a reader, a parent of
    worker processes) waits 30 s for itself and fails, and processes starting together through a pooler's few
    server connections each hold one and wait for another (PgBouncer's query_wait_timeout). Needs the storage's
    `_version_manager`, which holds the check."""
    versions = storage._version_manager
    current, head = versions.get_current_version(), versions.get_head_version()
    if current != head:
        fix = ("run `optuna storage upgrade --storage URL`" if current in versions.get_all_versions()
               else "update Optuna (`pip install -U optuna`)")
        raise RuntimeError(f"the database's tables are Optuna schema {current}, this Optuna reads {head}: {fix}")
