"""The CNN factory: an `ArchSpec` (JSON-able) -> a layer plan -> an `nn.Sequential`.

One walk over the spec (`plan`) yields every layer with its shapes and parameter count, so the
parameter gate, the summary table, the MAC count and the model itself can never disagree. torch is imported
only to build a model: specs, counts and checks stay cheap for the CLI and the readers.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nas20k.base.errors import UserError, known_fields
from nas20k.base.mission import Facts

if TYPE_CHECKING:
    from torch import nn

HEADS = ("gap", "fc", "conv", "direct")
ACTIVATIONS = ("relu", "silu", "gelu")


class SpecError(UserError):
    """A spec that cannot be built (bad field, or an image shrunk below 1x1); one readable line."""


@dataclass(frozen=True)
class ArchSpec:
    """Blocks of 3x3 convs (each conv -> BatchNorm -> activation [-> Dropout]) joined by transitions, then a head.

    A transition is a 1x1 conv to the given width then a 2x2 max-pool, or a plain max-pool (width 0).
    Heads: `gap` (global average pool -> linear), `fc` (flatten -> linear), `conv` (1x1 conv to the
    classes -> global average pool, no linear layer) and `direct` (global average pool straight over
    the last 3x3 conv, which must have one channel per class and keeps its BatchNorm but not its activation).
    The activation is ReLU unless `activation` names another (no parameters either way). With `separable`, every 3x3
    conv but the image's first is depthwise (one 3x3 filter per input channel, no bias) followed by a 1x1 conv to its
    width: about a ninth of the parameters at the same widths, so a tiny budget buys wider layers (MobileNet).
    """

    blocks: tuple[tuple[int, ...], ...]  # output width of each 3x3 conv, block by block
    transitions: tuple[int, ...]  # 1x1 width between block i and i+1 (0: max-pool only); len(blocks) - 1 entries
    head: str = "gap"
    dropout: float = 0.0
    dropout_after: tuple[int, ...] = ()  # 3x3 convs (numbered 0.. over all blocks) followed by Dropout(dropout)
    padding: tuple[int, ...] = ()  # per block, 0 or 1 for its 3x3 convs; () means 0 in every block
    bias: bool = True  # 3x3 convs carry a bias (redundant before BatchNorm: False saves one per channel)
    squeeze_bn: bool = False  # 1x1 convs are bias-free and followed by BatchNorm (+ activation in transitions)
    activation: str = "relu"  # one of ACTIVATIONS, after every BatchNorm but the logits'
    separable: bool = False  # 3x3 convs after the first: depthwise 3x3 -> 1x1 (one BatchNorm, after the 1x1)
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10

    def __post_init__(self) -> None:  # JSON gives lists; keep the spec hashable and comparable
        object.__setattr__(self, "blocks", tuple(tuple(b) for b in self.blocks))
        object.__setattr__(self, "transitions", tuple(self.transitions))
        object.__setattr__(self, "dropout_after", tuple(self.dropout_after))
        object.__setattr__(self, "padding", tuple(self.padding) or (0,) * len(self.blocks))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpec:
        try:
            return cls(**known_fields(cls, d, "spec", SpecError))
        except TypeError as e:
            raise SpecError(f"bad spec: {e}") from e

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ArchSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise SpecError(f"spec is not valid JSON: {e}") from e

    @classmethod
    def load(cls, path: Path | str) -> ArchSpec:
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file not found: {path}")
        spec = cls.from_json(path.read_text())
        spec.validate()
        return spec

    def validate(self) -> ArchSpec:
        """Raise SpecError on anything `build` would choke on, before a tensor exists."""
        plan(self)
        return self

    def num_params(self) -> int:
        return sum(layer.params for layer in plan(self))

    def macs(self) -> int:
        """Multiply-accumulates of one forward pass of one image (convs and linear layers)."""
        return sum(layer.macs for layer in plan(self))

    def build(self) -> nn.Sequential:
        from torch import nn

        return nn.Sequential(OrderedDict((layer.name, layer.module()) for layer in plan(self)))

    def facts(self, epochs: int) -> Facts:
        """What the mission's checklist asks of this model trained for `epochs`, read off the built model (what is
        exported), not the spec: its parameters, BatchNorm and Dropout layers, and what its logits come from."""
        return model_facts(self.build(), epochs, self.head)


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # conv3 | bn | act | dropout | conv1 | pool | gap | flatten | linear
    c_in: int
    c_out: int
    size: int  # output height = width
    p: float = 0.0  # dropout rate
    bias: bool = True  # convs and linear layers
    pad: int = 0  # conv3
    fn: str = "relu"  # act: which of ACTIVATIONS
    groups: int = 1  # conv3: c_in for a depthwise conv (each output channel reads one input channel)

    @property
    def params(self) -> int:
        k = {"conv3": 9, "conv1": 1, "linear": 1}.get(self.kind)
        if k is not None:
            return self.c_in // self.groups * self.c_out * k + self.c_out * self.bias
        return 2 * self.c_out if self.kind == "bn" else 0

    @property
    def macs(self) -> int:
        k = {"conv3": 9, "conv1": 1, "linear": 1}.get(self.kind, 0)
        return k * self.c_in // self.groups * self.c_out * self.size * self.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.c_out,) if self.kind == "linear" or self.kind == "flatten" else (self.c_out, self.size, self.size)

    def module(self) -> nn.Module:
        from torch import nn

        return {
            "conv3": lambda: nn.Conv2d(self.c_in, self.c_out, 3, padding=self.pad, bias=self.bias, groups=self.groups),
            "conv1": lambda: nn.Conv2d(self.c_in, self.c_out, 1, bias=self.bias),
            "bn": lambda: nn.BatchNorm2d(self.c_out),
            "act": lambda: {"relu": lambda: nn.ReLU(inplace=True), "silu": lambda: nn.SiLU(inplace=True),
                            "gelu": nn.GELU}[self.fn](),
            "dropout": lambda: nn.Dropout(self.p),
            "pool": lambda: nn.MaxPool2d(2),
            "gap": lambda: nn.AdaptiveAvgPool2d(1),
            "flatten": lambda: nn.Flatten(),
            "linear": lambda: nn.Linear(self.c_in, self.c_out),
        }[self.kind]()


def _check_fields(spec: ArchSpec) -> None:
    def ints(xs: tuple, low: int) -> bool:
        return all(isinstance(w, int) and not isinstance(w, bool) and w >= low for w in xs)

    if not spec.blocks or not all(spec.blocks) or not all(ints(b, 1) for b in spec.blocks):
        raise SpecError(f"blocks must be non-empty lists of positive conv widths, got {list(map(list, spec.blocks))}")
    if len(spec.transitions) != len(spec.blocks) - 1 or not ints(spec.transitions, 0):
        raise SpecError(f"need {len(spec.blocks) - 1} transition width(s) >= 0 (0: max-pool only), one between each "
                        f"pair of blocks, got {list(spec.transitions)}")
    if len(spec.padding) != len(spec.blocks) or not all(p in (0, 1) for p in spec.padding):
        raise SpecError(f"padding must list 0 or 1 for each of the {len(spec.blocks)} blocks (or be empty), "
                        f"got {list(spec.padding)}")
    if spec.activation not in ACTIVATIONS:
        raise SpecError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {spec.activation!r}")
    if spec.head not in HEADS:
        raise SpecError(f"head must be one of {', '.join(HEADS)}, got {spec.head!r}")
    if spec.head == "direct" and spec.blocks[-1][-1] != spec.num_classes:
        raise SpecError(f"head 'direct' pools the last conv into the logits: its width must be {spec.num_classes}, "
                        f"got {spec.blocks[-1][-1]}")
    if not all(isinstance(flag, bool) for flag in (spec.bias, spec.squeeze_bn, spec.separable)):
        raise SpecError("bias, squeeze_bn and separable must be true or false")
    if not isinstance(spec.dropout, (int, float)) or not 0 <= spec.dropout < 1:
        raise SpecError(f"dropout must be in [0, 1), got {spec.dropout!r}")
    n_convs = sum(map(len, spec.blocks))
    if (not all(isinstance(i, int) and 0 <= i < n_convs for i in spec.dropout_after)
            or len(set(spec.dropout_after)) != len(spec.dropout_after)):
        raise SpecError(f"dropout_after must list distinct conv indices in 0..{n_convs - 1}, "
                        f"got {list(spec.dropout_after)}")
    if not ints((spec.in_channels, spec.image_size, spec.num_classes), 1):
        raise SpecError("in_channels, image_size and num_classes must be positive integers")


def plan(spec: ArchSpec) -> list[Layer]:
    """Every layer of the model in order, with its output shape; raises SpecError if the image runs out."""
    _check_fields(spec)
    layers: list[Layer] = []
    c, size, conv = spec.in_channels, spec.image_size, 0
    last = sum(map(len, spec.blocks)) - 1
    for b, widths in enumerate(spec.blocks, start=1):
        pad = spec.padding[b - 1]
        for j, width in enumerate(widths, start=1):
            if size + 2 * pad < 3:
                raise SpecError(f"spec does not fit a {spec.image_size}x{spec.image_size} image: conv {j} of block {b} "
                                f"gets {size}x{size} input, needs at least {3 - 2 * pad}x{3 - 2 * pad}")
            size += 2 * pad - 2
            name = f"b{b}c{j}"
            if spec.separable and conv > 0:
                layers += [Layer(name, "conv3", c, c, size, bias=False, pad=pad, groups=c),
                           Layer(f"{name}_pw", "conv1", c, width, size, bias=spec.bias)]
            else:
                layers.append(Layer(name, "conv3", c, width, size, bias=spec.bias, pad=pad))
            layers.append(Layer(f"{name}_bn", "bn", width, width, size))
            if not (spec.head == "direct" and conv == last):  # the logits themselves: no activation, no Dropout
                layers.append(Layer(f"{name}_act", "act", width, width, size, fn=spec.activation))
                if conv in spec.dropout_after and spec.dropout > 0:
                    layers.append(Layer(f"{name}_drop", "dropout", width, width, size, spec.dropout))
            c, conv = width, conv + 1
        if b < len(spec.blocks):
            if size < 2:
                raise SpecError(f"spec does not fit a {spec.image_size}x{spec.image_size} image: transition {b} gets "
                                f"{size}x{size} input, needs at least 2x2 to pool")
            if width := spec.transitions[b - 1]:
                layers += _squeeze(f"t{b}", c, width, size, spec.squeeze_bn, spec.activation)
                c = width
            size //= 2
            layers.append(Layer(f"t{b}_pool", "pool", c, c, size))
    if spec.head == "conv":
        layers += _squeeze("head", c, spec.num_classes, size, spec.squeeze_bn, None)
        c = spec.num_classes
    if spec.head == "fc":
        c = c * size * size
        layers.append(Layer("flatten", "flatten", c, c, 1))
    else:
        layers += [Layer("gap", "gap", c, c, 1), Layer("flatten", "flatten", c, c, 1)]
    if spec.head in ("gap", "fc"):
        layers.append(Layer("fc", "linear", c, spec.num_classes, 1))
    return layers


def model_facts(model: nn.Module, epochs: int, head: str) -> Facts:
    """The checklist's facts of a built model. Its logits come from a global average pool when the last layer that
    changes the feature map's size or mixes channels is an adaptive average pool to 1x1 (a flatten may follow), or
    from a linear layer; a conv or a local pool there is neither."""
    from torch import nn

    modules = list(model.modules())
    dropout = max((m.p for m in modules if isinstance(m, nn.Dropout)), default=0.0)
    logits_from = None
    for m in reversed(modules):
        if isinstance(m, nn.Linear):
            logits_from = "linear layer"
        elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
            logits_from = "global average pool"
        elif not isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            continue  # flatten, BatchNorm, an activation, a container: look further back
        break
    return Facts(sum(p.numel() for p in model.parameters()), epochs,
                 any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules), dropout, head, logits_from)


def _squeeze(name: str, c_in: int, c_out: int, size: int, with_bn: bool, act: str | None) -> list[Layer]:
    """A 1x1 conv: with a bias and nothing after it, or bias-free followed by BatchNorm (and the activation `act`)."""
    if not with_bn:
        return [Layer(f"{name}_conv", "conv1", c_in, c_out, size)]
    layers = [Layer(f"{name}_conv", "conv1", c_in, c_out, size, bias=False),
              Layer(f"{name}_bn", "bn", c_out, c_out, size)]
    return layers + [Layer(f"{name}_act", "act", c_out, c_out, size, fn=act)] if act else layers


def summary(spec: ArchSpec) -> str:
    """A torchsummary-style table (layer, output shape, params) with totals, as plain text."""
    rows = [(f"{layer.module().__class__.__name__}-{i}", str([-1, *layer.shape]), f"{layer.params:,}")
            for i, layer in enumerate(plan(spec), 1)]
    header, rule = f"{'Layer (type)':>22}  {'Output Shape':>22}  {'Param #':>10}", "-" * 58
    lines = [rule, header, "=" * 58, *(f"{a:>22}  {b:>22}  {c:>10}" for a, b, c in rows), "=" * 58]
    lines += [f"Total params: {spec.num_params():,}", f"Forward MACs per image: {spec.macs():,}", rule]
    return "\n".join(lines)


PRESETS: dict[str, ArchSpec] = {
    # The hand-tuned reference: 17,666 parameters.
    "seed": ArchSpec(blocks=((8, 16, 32), (16, 16)), transitions=(8,), head="fc", dropout=0.1, dropout_after=(2,)),
    # A cheap GAP net in the style of public < 10k results: downsample early, widen after the pool.
    "small": ArchSpec(blocks=((8, 16), (16, 16, 16, 16)), transitions=(8,), head="gap", dropout=0.05,
                      dropout_after=(0, 1, 2, 3, 4)),
    # firekind/ERA4 session-6/src/session_6/model_4.py (6,174 params in torch, here too). Theirs: conv -> ReLU -> BN,
    # max-pool then Dropout, a last Dropout after the GAP. Here: conv -> BN -> ReLU, Dropout before the pool, none
    # after the GAP, and the last conv's ReLU dropped (its BN output is the logits). Same parameters and MACs.
    "firekind-6174": ArchSpec(blocks=((8, 8), (12, 12), (16, 10)), transitions=(0, 0), head="direct", dropout=0.1,
                              dropout_after=(1, 3), padding=(1, 1, 0)),
    # nitin-vig/ERAv4S6 MNIST_Final_Version.ipynb (7,070 params in torch, here too): no Dropout. Theirs: conv -> ReLU
    # -> BN, max-pool then the bias-free 1x1 squeeze, and a ReLU before the last BN. Here: conv -> BN -> ReLU, the
    # 1x1 before the pool (4x its MACs), no ReLU on the logits. Same parameters.
    "nitinvig-7070": ArchSpec(blocks=((10, 10, 20), (10, 10, 20)), transitions=(10,), head="conv", squeeze_bn=True),
    # nas20k's own: trial #33 of the default search (studies/reference/nas20k.db), chosen on validation and
    # confirmed on 3 seeds. firekind's layout, widened where the image is 14x14 (28-18-14): 14,088 params.
    "nas20k-14088": ArchSpec(blocks=((10, 10), (28, 18, 14), (16, 10)), transitions=(0, 0), head="direct",
                             dropout=0.07599300706563089, dropout_after=(1, 4), padding=(1, 1, 0)),
    # The best by mean val of every confirmed design under 20,000 params: trial #40 of the default search on the
    # 2-core laptop (studies/reference/nas20k-followers.db), chosen on validation, confirmed on 3 seeds (val 99.50
    # +- 0.02 %, every seed >= 99.49 %). firekind's layout with 22-22 at 14x14 and 18-12 before the logits conv.
    "nas20k-14838": ArchSpec(blocks=((6, 14), (22, 22), (18, 12, 10)), transitions=(0, 0), head="direct",
                             dropout=0.08669790376284486, dropout_after=(1, 3), padding=(0, 1, 1)),
    # The next by mean val: trial #46 of the default search on an H200 (studies/reference/nas20k-gpu-h200.db), chosen
    # on validation, confirmed on 3 seeds (val 99.49 +- 0.03 %).
    # 6-wide after the first conv's 16, a 1x1 transition to 8 before the first pool, 30-32-12 at 7x7 then GAP, with
    # Dropout after every conv: 1.18 M MACs per image, under half of the two below.
    "nas20k-19674": ArchSpec(blocks=((16, 6), (18,), (30, 32, 12)), transitions=(8, 0), head="gap",
                             dropout=0.042345493849935203, dropout_after=(0, 1, 2, 3, 4, 5), padding=(0, 0, 1),
                             bias=False),
    # The best two of the default searches on the 2-core laptop, each confirmed on 5 seeds: by mean val, trial #35
    # of studies/reference/nas20k-quiet.db (99.451 %); by mean test, #48 of nas20k-quiet-2.db (val 99.439 %, test
    # 99.585 %).
    "nas20k-14568": ArchSpec(blocks=((12, 4, 12), (30, 16, 12), (20, 10)), transitions=(0, 0), head="direct",
                             dropout=0.08134268872622469, dropout_after=(2, 5), padding=(1, 1, 0)),
    "nas20k-16424": ArchSpec(blocks=((6, 22), (14, 22, 16), (18, 18)), transitions=(0, 0), head="fc",
                             dropout=0.06470692249864636, dropout_after=(1, 4), padding=(0, 1, 0), bias=False),
    # Found by nas20k's search under 8,000 params and 15 epochs on an H200 (studies/reference/small8k-gpu.db, trials
    # #290 and #329, chosen on validation, confirmed on 5 seeds): firekind's layout again, with other widths.
    "nas20k-7458": ArchSpec(blocks=((12, 10), (10, 14), (18, 10)), transitions=(0, 0), head="direct",
                            dropout=0.06586064683528771, dropout_after=(1, 3), padding=(1, 1, 0)),
    # The smallest public net reported at >= 99.4 % (3,762 params in torch, here too; docs/design.md#presets):
    # three stages of three 3x3 convs, 4-4-4 | 8-8-8 | 8-8-8, a max-pool after stages 1 and 2, dropout 0.01, GAP
    # then a 1x1 conv 8 -> 10. Theirs: GAP before the 1x1 conv, BatchNorm after each conv, dropout placement per
    # their notebook.
    # Here: the 1x1 conv before the GAP (the same function: both are linear), conv -> BN -> ReLU, Dropout after the
    # last conv of stages 1 and 2 (before each pool), padding 1 in every stage (their padding is not published;
    # 28 -> 14 -> 7 keeps the last stage at 7x7). Same parameters.
    "public-3762": ArchSpec(blocks=((4, 4, 4), (8, 8, 8), (8, 8, 8)), transitions=(0, 0), head="conv", dropout=0.01,
                            dropout_after=(2, 5), padding=(1, 1, 1)),
    "nas20k-5826": ArchSpec(blocks=((6, 10), (10, 10), (18, 10)), transitions=(0, 0), head="direct",
                            dropout=0.08445798415386968, dropout_after=(1, 3), padding=(0, 1, 0)),
}
# nas20k-5826's layout with separable convs, 2-3x as wide, bias-free: 3,680 params. Below 3,800 it scored 0.05 points
# of val above the same layout's plain convs at 3,792 params (5 seeds; benchmarks/README.md#separable-convs).
PRESETS["nas20k-separable-3680"] = replace(PRESETS["nas20k-5826"], blocks=((8, 16), (24, 28), (32, 10)), bias=False,
                                           separable=True)
# The same, wider inside the search space's widths: 10-20 | 30-32 | 32-10, 4,578 params, the better by val of two ways
# to spend the smallest goal's 5,000 budget on it (3 seeds: 99.34 +- 0.12 %;
# benchmarks/README.md#separable-convs-at-the-smallest-goals-5000); its study's race: 99.36 +- 0.10 % on 5 seeds.
PRESETS["nas20k-separable-4578"] = replace(PRESETS["nas20k-separable-3680"], blocks=((10, 20), (30, 32), (32, 10)))


def copies(spec: ArchSpec, min_widths: tuple[int, ...] = ()) -> Iterator[ArchSpec]:
    """`spec` with every width but the logits' scaled by one factor, 100 % down to 10 % (even, >= 4, and >=
    `min_widths[b]` in block b where given): the distinct copies, widest first. Widths move in even steps, so
    neighbouring copies can differ by a fifth of the parameters."""
    logits = len(spec.blocks) - 1, len(spec.blocks[-1]) - 1  # head `direct`: that conv's width is the class count
    floors = [max([4, *min_widths[b:b + 1]]) for b in range(len(spec.blocks))]

    def at(pct: int) -> ArchSpec:
        def w(x: int, lo: int = 4) -> int:
            return max(lo, 2 * round(x * pct / 200))

        blocks = tuple(tuple(x if spec.head == "direct" and (b, j) == logits else w(x, floors[b])
                             for j, x in enumerate(ws)) for b, ws in enumerate(spec.blocks))
        return replace(spec, blocks=blocks, transitions=tuple(w(t) if t else 0 for t in spec.transitions))

    seen: set[ArchSpec] = set()
    for pct in range(100, 9, -1):  # lazily: `scaled` stops at the first copy that fits
        if (copy := at(pct)) not in seen:
            seen.add(copy)
            yield copy


def scaled(spec: ArchSpec, max_params: int, min_widths: tuple[int, ...] = ()) -> ArchSpec | None:
    """The widest of `copies` that fits under `max_params`: a known-good layout at the budget's size. None if not
    even a tenth of the widths fits."""
    return next((s for s in copies(spec, min_widths) if s.num_params() < max_params), None)
