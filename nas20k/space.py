"""The search space, define-by-run: the only module that calls `trial.suggest_*`.

Shape of the space (from ../shared/NOTES.md): a narrow block at full resolution, a 1x1 + max-pool
transition once the receptive field is ~5-7 px, wider blocks after it, GAP or FC head, small
dropout, OneCycle/step schedules, +-0-15 deg rotation. Width ranges are set so most samples fit
under 20k parameters (see `tests/test_space.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from nas20k.factory import ArchSpec
from nas20k.train import OPTIMIZERS, SCHEDULES, TrainConfig

MAX_BLOCKS = 3
# convs per block (low, high) for 2- and 3-block nets; the few 3-block nets that shrink 28x28 away are rejected
CONVS_PER_BLOCK = {2: {1: (1, 3), 2: (2, 5)}, 3: {1: (1, 2), 2: (1, 2), 3: (1, 2)}}
WIDTHS = {1: (4, 16), 2: (8, 32), 3: (8, 32)}  # per-conv width range by block (step 4): narrow where the image is large
LR_RANGE = {"sgd": (0.01, 0.3), "adam": (1e-3, 2e-2), "adamw": (1e-3, 2e-2)}


@dataclass
class Candidate:
    """What one trial trains: the architecture and the recipe. Travels from sampling to export."""

    spec: ArchSpec
    train: TrainConfig

    def to_dict(self) -> dict:
        return {"spec": self.spec.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        return cls(ArchSpec.from_dict(d["spec"]), TrainConfig.from_dict(d["train"]))


def suggest_spec(trial: optuna.Trial) -> ArchSpec:
    n_blocks = trial.suggest_int("blocks", 2, MAX_BLOCKS)
    blocks, transitions = [], []
    for b in range(1, n_blocks + 1):
        lo, hi = CONVS_PER_BLOCK[n_blocks][b]
        w_lo, w_hi = WIDTHS[b]
        n = trial.suggest_int(f"{n_blocks}blocks_b{b}_convs", lo, hi)
        blocks.append(tuple(trial.suggest_int(f"b{b}_w{j}", w_lo, w_hi, step=4) for j in range(1, n + 1)))
        if b < n_blocks:
            transitions.append(trial.suggest_int(f"t{b}_width", 4, 16, step=4))
    dropout_at = trial.suggest_categorical("dropout_at", ["block_end", "every_conv"])
    ends = [sum(map(len, blocks[: b + 1])) - 1 for b in range(n_blocks)]
    return ArchSpec(
        blocks=tuple(blocks),
        transitions=tuple(transitions),
        head=trial.suggest_categorical("head", ["gap", "fc"]),
        dropout=trial.suggest_float("dropout", 0.01, 0.25),  # > 0: Dropout is part of the requirement list
        dropout_after=tuple(ends if dropout_at == "block_end" else range(ends[-1] + 1)),
    )


def suggest_train(trial: optuna.Trial, epochs: int, seed: int = 0) -> TrainConfig:
    optimizer = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    lr_lo, lr_hi = LR_RANGE[optimizer]
    return TrainConfig(
        epochs=epochs,
        batch_size=trial.suggest_categorical("batch_size", [64, 128, 256]),
        optimizer=optimizer,
        lr=trial.suggest_float(f"{optimizer}_lr", lr_lo, lr_hi, log=True),
        momentum=0.9,
        nesterov=trial.suggest_categorical("nesterov", [True, False]) if optimizer == "sgd" else False,
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        schedule=trial.suggest_categorical("schedule", list(SCHEDULES)),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.1),
        rotate=trial.suggest_float("rotate", 0.0, 15.0),
        translate=trial.suggest_float("translate", 0.0, 2.0),
        seed=seed,
    )


def suggest(trial: optuna.Trial, epochs: int, seed: int = 0) -> Candidate:
    return Candidate(suggest_spec(trial), suggest_train(trial, epochs, seed))
