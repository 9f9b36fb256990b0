"""The CNN factory: an `ArchSpec` (JSON-able) -> a layer plan -> an `nn.Sequential`.

One walk over the spec (`plan`) yields every layer with its shapes and parameter count, so the
parameter gate, the summary table, the MAC count and the model itself can never disagree.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from torch import nn

HEADS = ("gap", "fc")


class SpecError(ValueError):
    """A spec that cannot be built (bad field, or an image shrunk below 1x1); one readable line."""


@dataclass(frozen=True)
class ArchSpec:
    """Blocks of unpadded 3x3 convs (each conv -> BatchNorm -> ReLU [-> Dropout]) joined by transitions
    (1x1 conv to the given width, then 2x2 max-pool), then a head: `gap` (global average pool -> linear)
    or `fc` (flatten -> linear)."""

    blocks: tuple[tuple[int, ...], ...]  # output width of each 3x3 conv, block by block
    transitions: tuple[int, ...]  # width of the 1x1 conv between block i and i+1 (len(blocks) - 1 entries)
    head: str = "gap"
    dropout: float = 0.0
    dropout_after: tuple[int, ...] = ()  # 3x3 convs (numbered 0.. over all blocks) followed by Dropout(dropout)
    in_channels: int = 1
    image_size: int = 28
    num_classes: int = 10

    def __post_init__(self) -> None:  # JSON gives lists; keep the spec hashable and comparable
        object.__setattr__(self, "blocks", tuple(tuple(b) for b in self.blocks))
        object.__setattr__(self, "transitions", tuple(self.transitions))
        object.__setattr__(self, "dropout_after", tuple(self.dropout_after))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpec:
        if not isinstance(d, dict):
            raise SpecError(f"a spec must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise SpecError(f"unknown spec field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**d)
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
        return nn.Sequential(OrderedDict((layer.name, layer.module()) for layer in plan(self)))


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # conv3 | bn | relu | dropout | conv1 | pool | gap | flatten | linear
    c_in: int
    c_out: int
    size: int  # output height = width
    p: float = 0.0  # dropout rate

    @property
    def params(self) -> int:
        return {
            "conv3": self.c_in * self.c_out * 9 + self.c_out,
            "conv1": self.c_in * self.c_out + self.c_out,
            "bn": 2 * self.c_out,
            "linear": self.c_in * self.c_out + self.c_out,
        }.get(self.kind, 0)

    @property
    def macs(self) -> int:
        k = {"conv3": 9, "conv1": 1, "linear": 1}.get(self.kind, 0)
        return k * self.c_in * self.c_out * self.size * self.size

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.c_out,) if self.kind == "linear" or self.kind == "flatten" else (self.c_out, self.size, self.size)

    def module(self) -> nn.Module:
        return {
            "conv3": lambda: nn.Conv2d(self.c_in, self.c_out, 3),
            "conv1": lambda: nn.Conv2d(self.c_in, self.c_out, 1),
            "bn": lambda: nn.BatchNorm2d(self.c_out),
            "relu": lambda: nn.ReLU(inplace=True),
            "dropout": lambda: nn.Dropout(self.p),
            "pool": lambda: nn.MaxPool2d(2),
            "gap": lambda: nn.AdaptiveAvgPool2d(1),
            "flatten": lambda: nn.Flatten(),
            "linear": lambda: nn.Linear(self.c_in, self.c_out),
        }[self.kind]()


def _check_fields(spec: ArchSpec) -> None:
    def positive_ints(xs: tuple) -> bool:
        return all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in xs)

    if not spec.blocks or not all(spec.blocks) or not all(positive_ints(b) for b in spec.blocks):
        raise SpecError(f"blocks must be non-empty lists of positive conv widths, got {list(map(list, spec.blocks))}")
    if len(spec.transitions) != len(spec.blocks) - 1 or not positive_ints(spec.transitions):
        raise SpecError(f"need {len(spec.blocks) - 1} positive transition width(s), one between each pair of blocks, got {list(spec.transitions)}")
    if spec.head not in HEADS:
        raise SpecError(f"head must be one of {', '.join(HEADS)}, got {spec.head!r}")
    if not isinstance(spec.dropout, (int, float)) or not 0 <= spec.dropout < 1:
        raise SpecError(f"dropout must be in [0, 1), got {spec.dropout!r}")
    n_convs = sum(map(len, spec.blocks))
    if not all(isinstance(i, int) and 0 <= i < n_convs for i in spec.dropout_after) or len(set(spec.dropout_after)) != len(spec.dropout_after):
        raise SpecError(f"dropout_after must list distinct conv indices in 0..{n_convs - 1}, got {list(spec.dropout_after)}")
    if not positive_ints((spec.in_channels, spec.image_size, spec.num_classes)):
        raise SpecError("in_channels, image_size and num_classes must be positive integers")


def plan(spec: ArchSpec) -> list[Layer]:
    """Every layer of the model in order, with its output shape; raises SpecError if the image runs out."""
    _check_fields(spec)
    layers: list[Layer] = []
    c, size, conv = spec.in_channels, spec.image_size, 0
    for b, widths in enumerate(spec.blocks, start=1):
        for j, width in enumerate(widths, start=1):
            if size < 3:
                raise SpecError(f"spec does not fit a {spec.image_size}x{spec.image_size} image: conv {j} of block {b} gets {size}x{size} input, needs at least 3x3")
            size -= 2
            name = f"b{b}c{j}"
            layers += [Layer(name, "conv3", c, width, size), Layer(f"{name}_bn", "bn", width, width, size), Layer(f"{name}_relu", "relu", width, width, size)]
            if conv in spec.dropout_after and spec.dropout > 0:
                layers.append(Layer(f"{name}_drop", "dropout", width, width, size, spec.dropout))
            c, conv = width, conv + 1
        if b < len(spec.blocks):
            if size < 2:
                raise SpecError(f"spec does not fit a {spec.image_size}x{spec.image_size} image: transition {b} gets {size}x{size} input, needs at least 2x2 to pool")
            width = spec.transitions[b - 1]
            layers.append(Layer(f"t{b}_conv", "conv1", c, width, size))
            size //= 2
            layers.append(Layer(f"t{b}_pool", "pool", width, width, size))
            c = width
    if spec.head == "gap":
        layers += [Layer("gap", "gap", c, c, 1), Layer("flatten", "flatten", c, c, 1)]
    else:
        c = c * size * size
        layers.append(Layer("flatten", "flatten", c, c, 1))
    layers.append(Layer("fc", "linear", c, spec.num_classes, 1))
    return layers


def summary(spec: ArchSpec) -> str:
    """A torchsummary-style table (layer, output shape, params) with totals, as plain text."""
    rows = [(f"{layer.module().__class__.__name__}-{i}", str([-1, *layer.shape]), f"{layer.params:,}") for i, layer in enumerate(plan(spec), 1)]
    header, rule = f"{'Layer (type)':>22}  {'Output Shape':>22}  {'Param #':>10}", "-" * 58
    lines = [rule, header, "=" * 58, *(f"{a:>22}  {b:>22}  {c:>10}" for a, b, c in rows), "=" * 58]
    lines += [f"Total params: {spec.num_params():,}", f"Forward MACs per image: {spec.macs():,}", rule]
    return "\n".join(lines)


PRESETS: dict[str, ArchSpec] = {
    # The hand-tuned reference: 17,666 parameters.
    "seed": ArchSpec(blocks=((8, 16, 32), (16, 16)), transitions=(8,), head="fc", dropout=0.1, dropout_after=(2,)),
    # A cheap GAP net in the style of public < 10k results: downsample early, widen after the pool.
    "small": ArchSpec(blocks=((8, 16), (16, 16, 16, 16)), transitions=(8,), head="gap", dropout=0.05, dropout_after=(0, 1, 2, 3, 4)),
}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
