"""The private Optuna calls nas20k needs, in one place, each with why (checked against Optuna 5.0).

A leaf module: readers and runner both use it. If Optuna grows a public way, the call changes here only.
"""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> BaseStorage:
    """`Study._storage`: a loaded study has no public accessor for its storage, which we need to open its sibling
    studies (the `:confirm` runs, the planning lock) on the same connection pool instead of a second engine."""
    return study._storage


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
            study.enqueue_trial(t.system_attrs.get("fixed_params", {}),
                                user_attrs={k: v for k, v in t.user_attrs.items() if k != "status"})


def trial_id(trial: FrozenTrial) -> int:
    """`FrozenTrial._trial_id`: the storage's key of a trial, which every storage call that changes a trial takes
    (failing a trial whose worker is gone, `lost.lose_trial`); a FrozenTrial has only its number publicly."""
    return trial._trial_id


# The private RDBStorage methods that Optuna's `_CachedStorage` (which `optuna.load_study` wraps every RDBStorage
# in) calls on its backend instead of the public ones, and `_get_stale_trial_ids`, which `fail_stale_trials` calls:
# `outage.PatientStorage` must retry these too, or a cached study's reads and trial creations would not ride out
# an outage (checked against Optuna 5.0.0).
CACHED_BACKEND_CALLS = (
    "_create_new_trial", "_set_trial_param", "_get_trials", "_get_best_trial_id", "_get_stale_trial_ids",
)
