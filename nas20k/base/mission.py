"""The mission's rules, as data: the budget a candidate must fit, what a search aims for, and the checklist an
exported model is judged by. Plain Python (no torch, no Optuna): every wing reads it."""

from __future__ import annotations

from dataclasses import dataclass

from nas20k.base.errors import UserError

TARGET_ACC = 0.994  # the mission's test-accuracy line
GOALS = ("accuracy", "smallest")
MAX_EPOCHS = 1000  # the one epoch limit, for recipes and budgets alike
# The accuracy goal's sampled candidates under this share of --max-params are rejected at no cost: the best nets
# of every accuracy study use 74-98 % of their budget, and a search without the floor trained nets at 6-60 % of it.
ACCURACY_FLOOR = 0.5
Z = 1.645  # one-sided 95 %: a design this many standard errors of the difference behind another is behind it


@dataclass(frozen=True)
class Budget:
    max_params: int = 20_000  # strictly fewer
    max_epochs: int = 20

    def validate(self) -> Budget:
        if self.max_params < 1:
            raise UserError(f"--max-params must be >= 1, got {self.max_params}")
        if not 1 <= self.max_epochs <= MAX_EPOCHS:
            raise UserError(f"--max-epochs must be between 1 and {MAX_EPOCHS}, got {self.max_epochs}")
        return self


@dataclass(frozen=True)
class Goal:
    """`accuracy`: the highest val score. `smallest`: the fewest parameters whose val score reaches `target`."""

    kind: str = "accuracy"
    target: float = TARGET_ACC  # val score a `smallest` search must reach

    def min_params(self, budget: Budget) -> int:
        """The fewest parameters a sampled candidate may have: `ACCURACY_FLOOR` of the budget for the accuracy goal
        (draws near the budget, not on nets a tenth of it), none for the smallest goal."""
        return int(ACCURACY_FLOOR * budget.max_params) if self.kind == "accuracy" else 0

    def validate(self) -> Goal:
        if self.kind not in GOALS:
            raise UserError(f"--goal must be one of {', '.join(GOALS)}, got {self.kind!r}")
        if not 0 < self.target < 1:
            raise UserError(f"--target must be a val accuracy between 0 and 1 (e.g. 0.994), got {self.target}")
        return self

    def value(self, val_score: float, params: int, budget: Budget) -> float:
        """What the study maximizes. For `smallest`: any passing candidate beats any failing one, and among
        passing ones fewer parameters win (target + up to 1 point); failing ones rank by their val score.
        Pruning still compares validation accuracy per epoch, which is what the trials report."""
        if self.kind == "accuracy" or val_score < self.target:
            return val_score
        return self.target + 0.01 * (1 - params / budget.max_params)


@dataclass(frozen=True)
class Facts:
    """What the checklist needs to know of a model (read off the built model by `factory.model_facts`), so this
    module needs no torch."""

    params: int
    epochs: int
    batchnorm: bool
    dropout: float  # 0: no Dropout layer
    head: str  # the spec's name for it
    logits_from: str | None  # "global average pool" | "linear layer" | None: neither


def checklist(facts: Facts, test_acc: float | None, budget: Budget, test_label: str = "test accuracy",
              seeds: int = 0) -> list[tuple[str, bool | None]]:
    """The mission's requirement list, one (line, passed) per requirement. With fewer than 2 seeds the accuracy
    line is unconfirmed (None): one run's figure is a draw, not a result, so it never shows as passed."""
    acc = "-" if test_acc is None else f"{test_acc:.2%}"
    unconfirmed = seeds < 2
    return [
        (f"parameters < {budget.max_params:,} ({facts.params:,})", facts.params < budget.max_params),
        (f"epochs <= {budget.max_epochs} ({facts.epochs})", facts.epochs <= budget.max_epochs),
        ("BatchNorm used", facts.batchnorm),
        (f"Dropout used (p={facts.dropout:.3g})", facts.dropout > 0),
        (f"GAP or FC head ({facts.head}: logits from {facts.logits_from or 'neither'})", facts.logits_from is not None),
        (f"{test_label} >= {TARGET_ACC:.1%} ({acc}{', unconfirmed: 1 seed' if unconfirmed else ''})",
         None if unconfirmed else test_acc is not None and test_acc >= TARGET_ACC),
    ]
