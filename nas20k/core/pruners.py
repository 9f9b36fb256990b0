"""Early stopping of weak trials on validation accuracy: the pruners a search may use, and their rungs, declared
once here. Every reader derives from `rungs`: the pruner itself, the epochs a trial must evaluate, the warm start's
first pruning epoch, the ETA's prior and the --pruner help. optuna is imported when a pruner is made, so the CLI's
--help stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

PRUNERS = ("asha", "asha3", "median", "hyperband", "none")
DEFAULT_PRUNER = "asha"  # won benchmarks/pruners.py: the first good candidate soonest
REDUCTION = 3  # successive halving keeps a third at each rung; rungs are REDUCTION times apart
FIRST_RUNG = {"asha": 1, "asha3": 3, "hyperband": 1}  # asha3: no verdict on one epoch, where fast starters win
MEDIAN_WARMUP = 5  # the median pruner judges after 5 epochs (and 5 trials)


def rungs(name: str, max_epochs: int) -> list[int]:
    """The epochs at which `make_pruner(name)` reads a trial's validation accuracy, up to `max_epochs`: the only
    ones a search trial needs to evaluate, besides the last ones its score averages."""
    if name in FIRST_RUNG:
        out, rung = [], FIRST_RUNG[name]
        while rung <= max_epochs:
            out.append(rung)
            rung *= REDUCTION
        return out
    if name == "median":
        return list(range(MEDIAN_WARMUP + 1, max_epochs + 1))
    return []


def pruner_epochs(name: str, max_epochs: int) -> set[int]:
    return set(rungs(name, max_epochs))


def warm_prune_from(max_epochs: int) -> int | None:
    """The first epoch a warm-start design after the lead may be pruned at: the last successive-halving rung (from
    epoch 1) before the last epoch, 9 of 20. Earlier, a OneCycle recipe is still warming up (its rate peaks at 30 %
    of the epochs): the design pruned at epoch 3 in smallest-5k-laptop (4,968 params) was the < 5,000 pass of
    smallest-5k. None where there is no such rung (1 epoch): it trains to the end."""
    before_last = [r for r in rungs("asha", max_epochs) if r < max_epochs]
    return before_last[-1] if before_last else None


def make_pruner(name: str, max_epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    if name in ("asha", "asha3"):  # the cheapest verdicts
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=FIRST_RUNG[name], reduction_factor=REDUCTION)
    if name == "hyperband":  # brackets start at each rung: hedges ASHA's early look, costs ~2.5x more epochs
        return optuna.pruners.HyperbandPruner(min_resource=FIRST_RUNG[name], max_resource=max_epochs,
                                              reduction_factor=REDUCTION)
    if name == "median":  # below the median of earlier trials at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=MEDIAN_WARMUP)
    return optuna.pruners.NopPruner()


def pruner_help() -> str:
    """The --pruner help, with the default's rungs at the default budget."""
    epochs = ", ".join(map(str, rungs(DEFAULT_PRUNER, 20)))
    return (f"Early stopping of weak trials on validation accuracy: {', '.join(PRUNERS)} "
            f"({DEFAULT_PRUNER}: successive halving at epochs {epochs} of 20).")
