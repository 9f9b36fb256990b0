"""The search space, define-by-run: the only module that calls `trial.suggest_*`.

It holds the moves hand-tuned small MNIST nets use (docs/design.md#candidate-and-search-space):
padding 1 early so 28x28 lasts, depthwise-separable convs (wider layers for the same parameters),
a plain max-pool or a 1x1 squeeze + max-pool, bias-free convs before BatchNorm, heads that end in a conv to
the classes and a global average pool, little dropout, SGD/Adam/AdamW with OneCycle or one step drop whose
epoch is searched (as a fraction of the epoch budget), rotation and shift. `params_of` is suggest's inverse,
so a known design can be enqueued as a trial (the warm start).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import optuna

from nas20k.core.factory import ArchSpec, scaled
from nas20k.core.recipe import OPTIMIZERS, TrainConfig
from nas20k.core.zoo import ZooEntry, entries

CONVS = (1, 3)  # 3x3 convs per block
WIDTHS = {1: (4, 24), 2: (8, 32), 3: (8, 32)}  # per-conv width range by block, step 2: narrow where the image is large
SQUEEZE = (4, 20)  # 1x1 transition widths, step 2
HEAD_CHOICES = ["gap", "fc", "conv", "direct"]
DROPOUT_AT = ["between_blocks", "block_end", "every_conv"]
DROPOUT = (0.01, 0.15)  # > 0: Dropout is on the requirement list
LR_RANGE = {"sgd": (0.005, 0.2), "adam": (1e-3, 2e-2), "adamw": (1e-3, 2e-2)}
SEARCHED_SCHEDULES = ["onecycle", "step"]
NUM_CLASSES = 10


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


def _dropout_convs(where: str, blocks: list[tuple[int, ...]]) -> tuple[int, ...]:
    ends = [sum(map(len, blocks[: b + 1])) - 1 for b in range(len(blocks))]
    return {"between_blocks": tuple(ends[:-1]), "block_end": tuple(ends),
            "every_conv": tuple(range(ends[-1] + 1))}[where]


def suggest_spec(trial: optuna.Trial) -> ArchSpec:
    head = trial.suggest_categorical("head", HEAD_CHOICES)
    n_blocks = trial.suggest_int("blocks", 2, 3)
    blocks, transitions, padding = [], [], []
    for b in range(1, n_blocks + 1):
        padding.append(trial.suggest_categorical(f"b{b}_pad", [0, 1]))
        n = trial.suggest_int(f"b{b}_convs", *CONVS)
        w_lo, w_hi = WIDTHS[b]
        widths = [trial.suggest_int(f"b{b}_w{j}", w_lo, w_hi, step=2)
                  for j in range(1, n + (head != "direct" or b < n_blocks))]
        blocks.append(tuple(widths if len(widths) == n else [*widths, NUM_CLASSES]))
        if b < n_blocks:
            squeeze = trial.suggest_categorical(f"t{b}", ["pool", "squeeze"]) == "squeeze"
            transitions.append(trial.suggest_int(f"t{b}_width", *SQUEEZE, step=2) if squeeze else 0)
    has_1x1 = head == "conv" or any(transitions)
    return ArchSpec(
        blocks=tuple(blocks),
        transitions=tuple(transitions),
        head=head,
        dropout=trial.suggest_float("dropout", *DROPOUT),
        dropout_after=_dropout_convs(trial.suggest_categorical("dropout_at", DROPOUT_AT), blocks),
        padding=tuple(padding),
        bias=trial.suggest_categorical("bias", [True, False]),
        squeeze_bn=trial.suggest_categorical("squeeze_bn", [True, False]) if has_1x1 else False,
        separable=trial.suggest_categorical("separable", [False, True]),
        num_classes=NUM_CLASSES,
    )


def suggest_train(trial: optuna.Trial, epochs: int, seed: int = 0) -> TrainConfig:
    optimizer = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    schedule = trial.suggest_categorical("schedule", SEARCHED_SCHEDULES)
    return TrainConfig(
        epochs=epochs,
        batch_size=trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        optimizer=optimizer,
        lr=trial.suggest_float(f"{optimizer}_lr", *LR_RANGE[optimizer], log=True),
        momentum=0.9,
        nesterov=trial.suggest_categorical("nesterov", [True, False]) if optimizer == "sgd" else False,
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        schedule=schedule,
        drop_at=trial.suggest_float("drop_at", 0.4, 0.85) if schedule == "step" else 0.5,
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.1),
        rotate=trial.suggest_float("rotate", 0.0, 15.0),
        translate=trial.suggest_float("translate", 0.0, 3.0),
        scale=trial.suggest_float("scale", 0.0, 0.15),
        seed=seed,
    )


def suggest(trial: optuna.Trial, epochs: int, seed: int = 0) -> Candidate:
    return Candidate(suggest_spec(trial), suggest_train(trial, epochs, seed))


def params_of(candidate: Candidate) -> dict:
    """The trial parameters for which `suggest` returns `candidate` (raises ValueError if the space cannot express
    it)."""
    spec, cfg = candidate.spec, candidate.train
    p: dict = {"head": spec.head, "blocks": len(spec.blocks)}
    for b, widths in enumerate(spec.blocks, start=1):
        p[f"b{b}_pad"] = spec.padding[b - 1]
        p[f"b{b}_convs"] = len(widths)
        suggested = widths[:-1] if spec.head == "direct" and b == len(spec.blocks) else widths
        p.update({f"b{b}_w{j}": w for j, w in enumerate(suggested, start=1)})
        if b < len(spec.blocks):
            width = spec.transitions[b - 1]
            p[f"t{b}"] = "squeeze" if width else "pool"
            if width:
                p[f"t{b}_width"] = width
    where = [w for w in DROPOUT_AT if _dropout_convs(w, list(spec.blocks)) == spec.dropout_after]
    p.update(dropout=spec.dropout, dropout_at=where[0] if where else None, bias=spec.bias, separable=spec.separable)
    if spec.head == "conv" or any(spec.transitions):
        p["squeeze_bn"] = spec.squeeze_bn
    p.update(optimizer=cfg.optimizer, schedule=cfg.schedule, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
             label_smoothing=cfg.label_smoothing, rotate=cfg.rotate, translate=cfg.translate, scale=cfg.scale)
    p[f"{cfg.optimizer}_lr"] = cfg.lr
    if cfg.optimizer == "sgd":
        p["nesterov"] = cfg.nesterov
    if cfg.schedule == "step":
        p["drop_at"] = cfg.drop_at
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*out of the range")  # FixedTrial only warns about those
        try:
            back = suggest(optuna.trial.FixedTrial(p), cfg.epochs, cfg.seed)
        except (KeyError, ValueError, UserWarning) as e:  # a 4th block, a Dropout placement or a value it lacks
            raise ValueError(f"the search space cannot express this candidate ({e}): {candidate.to_dict()}") from e
    if back.to_dict() != candidate.to_dict():
        raise ValueError(f"the search space cannot express this candidate: {candidate.to_dict()}")
    return p


def warm_start(epochs: int, seed: int = 0, max_params: int | None = None,
               zoo: list[ZooEntry] | None = None) -> dict[str, Candidate]:
    """The zoo's designs (`zoo.entries()`: the packaged one, then the user's) as candidates with the study's epochs
    and seed, in the zoo's order: the first that fits is the one a new study trains unpruned.

    Given `max_params` (what a new study queues): the designs that fit, then each one over it as `<name>-scaled`,
    the same layout and recipe with its widths scaled down to fit (`factory.scaled`); a design the space cannot
    express at that size is left out."""
    starts = {e.name: Candidate(e.spec, replace(e.recipe, epochs=epochs, seed=seed))
              for e in (entries() if zoo is None else zoo)}
    if max_params is None:
        return starts
    fits = {name: c for name, c in starts.items() if c.spec.num_params() < max_params}
    scaled_down = {f"{name}-scaled": replace(c, spec=small) for name, c in starts.items()
                   if name not in fits and (small := scaled(c.spec, max_params)) is not None}
    return {name: c for name, c in {**fits, **scaled_down}.items() if expressible(c)}


def expressible(candidate: Candidate) -> bool:
    """Whether `params_of` can give the candidate's trial parameters: False for a design scaled to a tiny budget,
    narrower than the space's width ranges, or a zoo design with a 4th block."""
    try:
        params_of(candidate)
    except ValueError:
        return False
    return True
