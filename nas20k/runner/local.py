"""Local search interleaved with TPE: once the warm start's queue is empty, every MOVE_EVERY-th trained trial is
a neighbour of one of the study's TOURNAMENT best completed designs (`core.moves`), queued as an ordinary trial
with its move recorded (`move`, `move_of`), so records, report and dashboard read it like any other.

Why this mix: in the committed studies TPE's samples were pruned against the warm start's designs and never
refined them, while local search around the best designs is a strong NAS baseline (White et al. 2021); two TPE
trials to one move keeps TPE's exploration (it still learns from every trial, the moves included) and spends a
third of the trained trials one gene away from the incumbents. Parents are drawn from the top few, not only the
best, because one seed's val ranks close designs by noise (regularized evolution's tournament, Real et al. 2019).
"""

from __future__ import annotations

import random

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from nas20k.core.moves import neighbours
from nas20k.readers.record import records
from nas20k.runner.storage import planning_lock

MOVE_EVERY = 3  # one trained trial in three is a move
TOURNAMENT = 3  # its parent: one of the best this many completed designs


def due(recs: list) -> bool:
    """True when the last MOVE_EVERY - 1 trained trials since the last move were TPE's (a warm start counts as
    TPE's here: the first move comes after two trials past it)."""
    since = 0
    for r in reversed(recs):
        if r.move is not None:
            break
        since += r.trained
    return since >= MOVE_EVERY - 1


def enqueue_move(study: optuna.Study, storage: RDBStorage, max_params: int, seed: int) -> str | None:
    """Queue one untried neighbour of a top design when a move is due and nothing else waits; returns what was
    queued (`"<move> of #<parent>"`) or None. Under the planning lock, so parallel workers queue one move, not one
    each."""
    with planning_lock(storage, study.study_name):
        trials = study.get_trials(deepcopy=False)
        if any(t.state == TrialState.WAITING for t in trials):
            return None
        recs = records(trials)
        if not due(recs):
            return None
        parents = sorted((t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
                         key=lambda t: t.value, reverse=True)[:TOURNAMENT]
        tried = [t.params for t in trials]
        rng = random.Random(seed + len(trials))
        rng.shuffle(parents)
        for parent in parents:
            candidate = recs[parent.number].candidate
            if candidate is None:
                continue
            try:
                options = [(name, p) for name, p in neighbours(candidate, max_params) if p not in tried]
            except ValueError:  # a design the space cannot express (a zoo design with 4 blocks): no neighbours
                continue
            if options:
                name, params = rng.choice(options)
                study.enqueue_trial(params, user_attrs={"move": name, "move_of": parent.number})
                return f"{name} of #{parent.number}"
    return None
