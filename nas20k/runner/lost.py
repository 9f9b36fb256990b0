"""Trials whose worker is gone: a RUNNING trial owned by a dead process on this host is failed and queued again at
once; one from another host once its heartbeat is stale (Optuna's own check). docs/reliability.md."""

from __future__ import annotations

import os
import socket
import warnings
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from nas20k.base.optuna_private import queue_retry, queued_params, storage_of, trial_id
from nas20k.readers.record import CARRIED

OWNER = "worker"  # the user attr naming the process that runs a trial, "host:pid" (owner_name)
MAX_RETRY = 2  # a trial whose worker is gone is queued again at most this often (a candidate that kills its worker)


def owner_name() -> str:
    """host:pid of this process: the `worker` every trial records, and what tells a dead owner from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, from /proc (Linux); None elsewhere or when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def owner_alive(owner: object) -> bool | None:
    """Whether the process named "host:pid" lives: True or False on this host (a zombie, killed and not yet reaped
    by its parent, is dead); None for another host's, or no owner: there only its heartbeat tells."""
    host, _, pid = str(owner).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    stat = _proc_stat(int(pid))
    return stat is None or stat[0] != "Z"


def sibling(owner: object) -> bool:
    """Whether "host:pid" is this process or another worker of the same command (spawned by the same parent)."""
    host, _, pid = str(owner).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    stat = _proc_stat(int(pid))
    return int(pid) == os.getpid() or (stat is not None and stat[1] == os.getppid())


def _retriable(t: FrozenTrial) -> bool:
    """Whether there is something to retrain: a sampled candidate, a queued one's parameters, a confirmation run."""
    return "candidate" in t.user_attrs or bool(queued_params(t)) or "confirms" in t.user_attrs


def _retries(trials: list[FrozenTrial], t: FrozenTrial) -> int:
    """How often `t`'s candidate was retried already (its chain of `retry_of`)."""
    n, depth = t.user_attrs.get("retry_of"), 0
    while n is not None and n < len(trials) and depth <= MAX_RETRY:
        n, depth = trials[n].user_attrs.get("retry_of"), depth + 1
    return depth


def mark_lost(storage: optuna.storages.BaseStorage, t: FrozenTrial, trials: list[FrozenTrial], why: str) -> bool:
    """Say on a RUNNING trial why it is about to be failed; whether it will be queued again. It reads as
    "interrupted" (retried, or nothing to retrain), or "failed" once MAX_RETRY retries died too."""
    retry = _retriable(t) and _retries(trials, t) < MAX_RETRY
    epoch = len(t.user_attrs.get("history") or []) + 1
    when = f"in epoch {epoch}" if "candidate" in t.user_attrs else "before training"
    if retry:
        status, tail = "interrupted", "queued again with the same parameters"
    elif _retriable(t):
        status, tail = "failed", f"not retried: its worker died {MAX_RETRY + 1} times"
    else:
        status, tail = "interrupted", "nothing to retrain"
    storage.set_trial_user_attr(trial_id(t), "status", status)
    storage.set_trial_user_attr(trial_id(t), "reason", f"{why} {when}; {tail}")
    return retry


def requeue(study: optuna.Study, t: FrozenTrial) -> None:
    """Queue a lost trial again: its parameters, the attributes its objective reads (warm start, pruning start; a
    confirmation's candidate and seed), `retry_of` for our records, and Optuna's own retry marks
    (`RetryHeartbeatStaleTrialCallback.retried_trial_number`/`retry_history`)."""
    a = t.user_attrs
    kept = ("confirms", "seed", "candidate", "params") if "confirms" in a else CARRIED
    queue_retry(study, t, {**{k: a[k] for k in kept if k in a}, "retry_of": t.number})


def lose_trial(study: optuna.Study, t: FrozenTrial, why: str) -> bool:
    """Fail a RUNNING trial whose worker is gone, saying why, and queue it again; False when another process
    did so first (several workers may find the same trial)."""
    storage = storage_of(study)
    try:
        retry = mark_lost(storage, t, study.get_trials(deepcopy=False), why)
        if not storage.set_trial_state_values(trial_id(t), state=TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    if retry:
        requeue(study, t)
    return True


def recover_lost_trials(study: optuna.Study) -> list[int]:
    """Fail and queue again, at once, each RUNNING trial whose worker process on this host is gone (killed,
    crashed, its machine rebooted under the same name); and, as Optuna does before each trial, those of other
    hosts silent for longer than the heartbeat's grace period. Returns the numbers of this host's."""
    lost = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        why = f"worker {owner} died (no such process)"
        if owner_alive(owner) is False and lose_trial(study, t, why):
            lost.append(t.number)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    return lost


class RequeueLostTrial:
    """The heartbeat's stale-trial callback: queue again a trial that `PatientStorage._get_stale_trial_ids` marked
    as retried (Optuna's RetryHeartbeatStaleTrialCallback would copy its dead worker's attributes, `worker`
    included, so that the copy would look lost again the moment it is popped)."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.user_attrs.get("status") == "interrupted" and _retriable(trial):
            requeue(study, trial)
