"""The training recipe a candidate carries, as a JSON-able dataclass; each field's help text and label live in
its metadata, so the CLI's flags, the report's recipe table and the checks read one declaration.

How a run executes (device, precision, graphs) is not part of it: that is `runtime.Runtime`. Plain Python, so
the CLI can build its flags without importing torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from nas20k.base.errors import UserError, known_fields
from nas20k.base.mission import MAX_EPOCHS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("onecycle", "step", "none")


class RecipeError(UserError):
    """A training recipe that cannot run (bad field or value); one readable line."""


def _f(default: object, help: str, label: str) -> object:  # noqa: A002 - the flag's help text
    return field(default=default, metadata={"help": help, "label": label})


@dataclass
class TrainConfig:
    """The training recipe a candidate carries."""

    epochs: int = _f(20, "Training epochs.", "epochs")
    batch_size: int = _f(128, "Batch size.", "batch size")
    optimizer: str = _f("sgd", f"One of {', '.join(OPTIMIZERS)}.", "optimizer")
    lr: float = _f(0.05, "Peak learning rate (OneCycle's max; the start for step/none).", "peak learning rate")
    momentum: float = _f(0.9, "SGD momentum.", "momentum (SGD only)")
    nesterov: bool = _f(True, "Nesterov momentum (SGD).", "Nesterov momentum (SGD only)")
    weight_decay: float = _f(5e-4, "Weight decay.", "weight decay")
    schedule: str = _f("onecycle", f"LR schedule: {', '.join(SCHEDULES)} (step: x0.1 once, after drop_at of the "
                                   "epochs).", "learning-rate schedule")
    drop_at: float = _f(0.5, "Step schedule: the rate drops 10x after this fraction of the epochs.",
                        "step schedule: drop 10x at fraction of epochs")
    label_smoothing: float = _f(0.0, "Label smoothing.", "label smoothing")
    rotate: float = _f(10.0, "Random rotation, +- degrees.", "augmentation: rotation, ± degrees")
    translate: float = _f(1.0, "Random shift, +- pixels.", "augmentation: shift, ± pixels")
    scale: float = _f(0.0, "Random zoom, +- this fraction (0.1: 0.9x to 1.1x).", "augmentation: zoom, ± fraction")
    recalibrate_bn: bool = _f(True, "Before each evaluation, recompute BatchNorm's statistics on 10,000 clean training "
                                    "images with Dropout off (what test time sees).",
                              "BatchNorm statistics from clean images before each evaluation")
    seed: int = _f(0, "Seed for init, batch order and augmentation.", "training seed")

    def validate(self) -> TrainConfig:
        checks = [
            (1 <= self.epochs <= MAX_EPOCHS, f"epochs must be between 1 and {MAX_EPOCHS}, got {self.epochs}"),
            (self.batch_size >= 2, f"batch size must be >= 2, got {self.batch_size}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"),
            (self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}"),
            (math.isfinite(self.lr) and self.lr > 0, f"learning rate must be a finite number > 0, got {self.lr}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"weight decay must be a finite number >= 0, got {self.weight_decay}"),
            (0 <= self.rotate <= 180, f"rotate must be between 0 and 180 degrees, got {self.rotate}"),
            (math.isfinite(self.translate) and self.translate >= 0,
             f"translate must be a finite number of pixels >= 0, got {self.translate}"),
            (0 < self.drop_at < 1, f"drop_at must be in (0, 1), got {self.drop_at}"),
            (0 <= self.label_smoothing < 1, f"label smoothing must be in [0, 1), got {self.label_smoothing}"),
            (0 <= self.scale < 1, f"scale must be a fraction in [0, 1), got {self.scale}"),
        ]
        for ok, message in checks:
            if not ok:
                raise RecipeError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = known_fields(cls, _without_retired(d), "recipe", RecipeError)
        # A recipe recorded before `recalibrate_bn` existed was trained and scored without it: re-running it (a confirm
        # seed of an older study, `nas20k train --recipe` of an older export) must do the same.
        return cls(**{"recalibrate_bn": False, **d})


# Fields older recipes carry for features the benchmarks measured and retired (benchmarks/README.md#history): the
# weights' moving average and distillation from a teacher. Off, they change nothing and are dropped on loading; on,
# the recipe cannot be replayed as it was trained, so it is refused.
RETIRED = {"ema": 0.0, "distill": 0.0, "teacher": "", "temperature": None}


def _without_retired(d: object) -> object:
    if not isinstance(d, dict):
        return d
    on = [f"{k}={d[k]!r}" for k, off in RETIRED.items() if k in d and off is not None and d[k] != off]
    if on:
        raise RecipeError(f"this recipe uses {', '.join(on)}, a feature nas20k retired (no better in its benchmarks); "
                          "it cannot be replayed as it was trained")
    return {k: v for k, v in d.items() if k not in RETIRED}


def load_recipe(path: Path) -> TrainConfig:
    """A TrainConfig from JSON: either the config itself or a metrics.json holding it under "train"."""
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"recipe file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"recipe is not valid JSON: {path}: {e}") from None
    return TrainConfig.from_dict(d.get("train", d) if isinstance(d, dict) else d)


def labels() -> dict[str, str]:
    """Each recipe field in words (the report's recipe table)."""
    return {f.name: f.metadata["label"] for f in fields(TrainConfig)}
