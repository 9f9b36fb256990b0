"""Local-search moves: the neighbours of a design, each one or two genes changed, as the search space's own
parameters (the genes), so a neighbour is queued as an ordinary Optuna trial and read like any other.

Why: TPE explores the whole space but rarely refines a strong incumbent (in the committed studies its sampled
trials were pruned against the warm start's designs); local search around the best designs is a strong NAS
baseline (White et al. 2021, "Exploring the loss landscape in neural architecture search"; regularized evolution,
Real et al. 2019, mutates one gene at a time). A move edits the parameter dict `space.params_of` gives; the space
then rebuilds the candidate, so a move can change nothing the space does not express.
"""

from __future__ import annotations

import re

import optuna

from nas20k.core.factory import SpecError
from nas20k.core.space import DROPOUT, LR_RANGE, SQUEEZE, WIDTHS, Candidate, params_of, suggest

STEP = 2  # widths move by the space's step
FACTOR = 1.5  # dropout and learning rate move by this factor up or down
BATCHES = (32, 64, 128, 256)


def _clip(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, x))


def _edits(p: dict) -> list[tuple[str, dict]]:
    """(name, changed genes) for every move of the parameters `p`: a width or a squeeze ± a step, a conv added or
    removed at a block's end, padding, separable, pool or squeeze flipped, dropout, learning rate and batch size
    up or down, the schedule swapped, rotation and shift up or down."""
    out: list[tuple[str, dict]] = []
    for key, value in p.items():
        if m := re.fullmatch(r"b(\d)_w(\d)", key):
            lo, hi = WIDTHS[int(m.group(1))]
            out += [(f"{key} {d:+d}", {key: value + d}) for d in (-STEP, STEP) if lo <= value + d <= hi]
        elif re.fullmatch(r"t\d_width", key):
            out += [(f"{key} {d:+d}", {key: value + d}) for d in (-STEP, STEP) if SQUEEZE[0] <= value + d <= SQUEEZE[1]]
        elif re.fullmatch(r"b\d_pad", key):
            out.append((f"{key} {1 - value}", {key: 1 - value}))
        elif re.fullmatch(r"t\d", key):
            squeeze = {key: "squeeze", f"{key}_width": 8, "squeeze_bn": p.get("squeeze_bn", True)}
            out.append((f"{key} pool", {key: "pool", f"{key}_width": None}) if value == "squeeze"
                       else (f"{key} squeeze", squeeze))
    for b in range(1, p["blocks"] + 1):
        n, widths = p[f"b{b}_convs"], sorted(k for k in p if re.fullmatch(rf"b{b}_w\d", k))
        if n < 3 and widths:
            out.append((f"b{b} +conv", {f"b{b}_convs": n + 1, f"b{b}_w{len(widths) + 1}": p[widths[-1]]}))
        if n > 1 and widths:
            out.append((f"b{b} -conv", {f"b{b}_convs": n - 1, widths[-1]: None}))
    lr = f"{p['optimizer']}_lr"
    out += [("separable", {"separable": not p["separable"]}),
            ("dropout x1.5", {"dropout": _clip(p["dropout"] * FACTOR, *DROPOUT)}),
            ("dropout /1.5", {"dropout": _clip(p["dropout"] / FACTOR, *DROPOUT)}),
            ("lr x1.5", {lr: _clip(p[lr] * FACTOR, *LR_RANGE[p["optimizer"]])}),
            ("lr /1.5", {lr: _clip(p[lr] / FACTOR, *LR_RANGE[p["optimizer"]])}),
            ("rotate +3", {"rotate": _clip(p["rotate"] + 3, 0.0, 15.0)}),
            ("rotate -3", {"rotate": _clip(p["rotate"] - 3, 0.0, 15.0)}),
            ("shift +0.5", {"translate": _clip(p["translate"] + 0.5, 0.0, 3.0)}),
            ("shift -0.5", {"translate": _clip(p["translate"] - 0.5, 0.0, 3.0)}),
            ("schedule onecycle", {"schedule": "onecycle", "drop_at": None}) if p["schedule"] == "step"
            else ("schedule step", {"schedule": "step", "drop_at": 0.6})]
    i = BATCHES.index(p["batch_size"])
    out += [(f"batch {BATCHES[j]}", {"batch_size": BATCHES[j]}) for j in (i - 1, i + 1) if 0 <= j < len(BATCHES)]
    return out


def _moved(candidate: Candidate, max_params: int) -> list[tuple[str, Candidate]]:
    """(move, neighbour) for each move of `candidate` that changes it, builds, and stays under `max_params`.
    Raises ValueError if the space cannot express `candidate` itself."""
    p = params_of(candidate)
    out = []
    for name, change in _edits(p):
        q = {k: v for k, v in {**p, **change}.items() if v is not None}
        if q == p:
            continue  # clipped at a bound: no change
        try:
            c = suggest(optuna.trial.FixedTrial(q), candidate.train.epochs, candidate.train.seed)
            if c.spec.num_params() < max_params:
                out.append((name, c))
        except (SpecError, ValueError, KeyError):  # a map too small for the convs, or a width the space lacks
            continue
    return out


def neighbours(candidate: Candidate, max_params: int) -> list[tuple[str, dict]]:
    """(move, the neighbour's trial parameters) for each move of `candidate` that changes it, builds, and stays
    under `max_params`. Raises ValueError if the space cannot express `candidate` itself."""
    return [(name, params_of(c)) for name, c in _moved(candidate, max_params)]


def same_size(candidate: Candidate) -> list[tuple[str, Candidate]]:
    """The neighbours of `candidate` with its parameter count (padding, dropout, learning rate, augmentation,
    schedule, batch size): what the shrink search tries at a size where its step failed."""
    n = candidate.spec.num_params()
    return [(name, c) for name, c in _moved(candidate, n + 1) if c.spec.num_params() == n]
