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

from nas20k.core.factory import PRESETS, ArchSpec, scaled
from nas20k.core.recipe import OPTIMIZERS, TrainConfig

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


def warm_start(epochs: int, seed: int = 0, max_params: int | None = None) -> dict[str, Candidate]:
    """Known-good designs with their recipes, measured ones first, best by mean val first (their records:
    docs/results.md): nas20k's own winners (the best of a default search on the 2-core laptop and of the default
    search on an H200, each on 3 seeds, the best two of the default searches on the laptop on 5 seeds, the first
    default search's, then the two best of its search under 8,000 params, then nas20k-5826's layout with separable
    convs at 4,578 and 3,680 params and the lighter augmentation below), then the public hand-tuned designs with their
    published recipes as the space expresses them, and firekind-6174 again with nas20k's default recipe (SGD +
    Nesterov, OneCycle to 0.05), and last nas20k-5826 with rotation ± 5° and shift ± 1 px, which scaled below 3,800
    params scored 0.14 points higher by val than with its own ± 10.9° / ± 2.2 px
    (benchmarks/README.md#how-much-augmentation). The first that fits is the one a new study trains unpruned.

    Given `max_params` (what a new study queues): the designs that fit, then each one over it as `<name>-scaled`,
    the same layout and recipe with its widths scaled down to fit (`factory.scaled`); a design the space cannot
    express at that size is left out.

    Changes from the published recipes: weight decay 1e-6 where they use none (the space's floor); nitinvig-7070
    gets Dropout 0.05 after its first block (Dropout is on the requirement list; it had none); public-3762's
    shift-scale-rotate and random crop become rotation, shift and zoom."""
    step = {"schedule": "step", "drop_at": 2 / 3, "weight_decay": 1e-6, "epochs": epochs, "seed": seed,
            "label_smoothing": 0.0}
    five = TrainConfig(
        epochs=epochs, seed=seed, batch_size=128, optimizer="adam", lr=0.006447292990840697, nesterov=False,
        weight_decay=1.8247320262274673e-06, schedule="step", drop_at=0.5299581184188855,
        label_smoothing=0.0032693463755512605, rotate=10.949186748615638, translate=2.1961058861319254)
    light = replace(five, rotate=5.0, translate=1.0)  # measured better by val on nets under 3,800 params
    starts = {
        "nas20k-14838": Candidate(PRESETS["nas20k-14838"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=64, optimizer="sgd", lr=0.05756822561756882, momentum=0.9,
            nesterov=True, weight_decay=7.0999155113840376e-06, schedule="step", drop_at=0.6572398455263502,
            label_smoothing=0.039148348658830046, rotate=0.025391567912737056, translate=1.371983900923956,
            scale=0.011535324925592488)),
        "nas20k-19674": Candidate(PRESETS["nas20k-19674"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=128, optimizer="adamw", lr=0.006400459075783589, nesterov=False,
            weight_decay=4.146668495926638e-05, schedule="step", drop_at=0.7205255642759163,
            label_smoothing=0.09422339615621386, rotate=7.315463230871533, translate=2.7891459940931926)),
        "nas20k-14568": Candidate(PRESETS["nas20k-14568"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=64, optimizer="sgd", lr=0.026494170218445363, momentum=0.9,
            nesterov=False, weight_decay=2.348282266041599e-06, schedule="step", drop_at=0.7012082164427915,
            label_smoothing=0.016714376146171158, rotate=2.708810825275397, translate=2.8854632533388647,
            scale=0.022123983546434252)),
        "nas20k-16424": Candidate(PRESETS["nas20k-16424"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=256, optimizer="adam", lr=0.006083142388771901, nesterov=False,
            weight_decay=2.932469527952377e-06, schedule="step", drop_at=0.4775779476916749,
            label_smoothing=0.037138541521516126, rotate=1.0109588546934798, translate=0.3490290618822562,
            scale=0.019752477171121184)),
        "nas20k-14088": Candidate(PRESETS["nas20k-14088"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=64, optimizer="sgd", lr=0.054883713141925874, momentum=0.9,
            nesterov=True, weight_decay=1.4730470533894558e-06, schedule="step", drop_at=0.449332125509357,
            label_smoothing=0.002877489548955803, rotate=3.538012029004655, translate=2.4803158001284342)),
        "nas20k-7458": Candidate(PRESETS["nas20k-7458"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=128, optimizer="adam", lr=0.00726713929566292, nesterov=False,
            weight_decay=1.5023597730143111e-06, schedule="step", drop_at=0.7695108312794752,
            label_smoothing=0.002071040265234445, rotate=9.89549841804861, translate=2.490999774761633)),
        "nas20k-5826": Candidate(PRESETS["nas20k-5826"], five),
        "nas20k-separable-4578": Candidate(PRESETS["nas20k-separable-4578"], light),
        "nas20k-separable-3680": Candidate(PRESETS["nas20k-separable-3680"], light),
        "public-3762": Candidate(PRESETS["public-3762"], TrainConfig(
            epochs=epochs, seed=seed, batch_size=32, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
            weight_decay=1e-6, schedule="onecycle", rotate=10.0, translate=2.0, scale=0.1)),
        "firekind-6174": Candidate(PRESETS["firekind-6174"], TrainConfig(
            **step, optimizer="adam", lr=0.01, batch_size=128, rotate=10.0, translate=2.8, nesterov=False)),
        "firekind-6174-onecycle": Candidate(PRESETS["firekind-6174"], TrainConfig(epochs=epochs, seed=seed)),
        "nitinvig-7070": Candidate(replace(PRESETS["nitinvig-7070"], dropout=0.05, dropout_after=(2,)), TrainConfig(
            **step, optimizer="sgd", lr=0.01, nesterov=False, batch_size=128, rotate=0.0, translate=0.0)),
    }
    starts["nas20k-5826-light"] = Candidate(PRESETS["nas20k-5826"], light)
    if max_params is None:
        return starts
    fits = {name: c for name, c in starts.items() if c.spec.num_params() < max_params}
    scaled_down = {f"{name}-scaled": replace(c, spec=small) for name, c in starts.items()
                   if name not in fits and (small := scaled(c.spec, max_params)) is not None}
    return {name: c for name, c in {**fits, **scaled_down}.items() if _expressible(c)}


def _expressible(candidate: Candidate) -> bool:
    """False for a design scaled to a tiny budget, narrower than the space's width ranges."""
    try:
        params_of(candidate)
    except ValueError:
        return False
    return True
