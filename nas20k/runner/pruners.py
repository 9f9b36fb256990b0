"""Early stopping of weak trials on validation accuracy: the pruners a search may use, and the epochs each reads
(the only epochs a search trial must evaluate, besides those its score averages). optuna is imported when a
pruner is made, so the CLI's --help stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

PRUNERS = ("asha", "asha3", "median", "hyperband", "none")
DEFAULT_PRUNER = "asha"  # won benchmarks/pruners.py: the first good candidate soonest


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    if name == "asha":  # rungs at epochs 1, 3, 9: a third goes on at each; the cheapest verdicts
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "asha3":  # rungs at epochs 3, 9: no verdict on one epoch, where fast starters win and late bloomers lose
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=3)
    if name == "hyperband":  # brackets start at epochs 1, 3, 9: hedges ASHA's early look, costs ~2.5x more epochs
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":  # below the median of earlier trials at the same epoch, after 5 epochs and 5 trials
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)
    return optuna.pruners.NopPruner()


def pruner_epochs(name: str, max_epochs: int) -> set[int]:
    """The epochs at which `make_pruner(name)` reads a trial's validation accuracy: the only ones a search trial
    needs to evaluate, besides the last ones its score averages."""
    if name in ("asha", "hyperband"):
        rungs = [1, 3, 9, 27, 81, 243]
    elif name == "asha3":
        rungs = [3, 9, 27, 81, 243]
    elif name == "median":
        rungs = list(range(6, max_epochs + 1))
    else:
        rungs = []
    return {e for e in rungs if e <= max_epochs}
