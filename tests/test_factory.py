"""The factory: parameter and MAC counts, shape checks and layer rules, against torch and a by-hand build."""

import random
from dataclasses import replace

import pytest
import torch
from torch import nn

from nas20k.core.factory import HEADS, PRESETS, ArchSpec, SpecError, scaled, summary


def count_params(model) -> int:  # noqa: ANN001
    return sum(p.numel() for p in model.parameters())

X = torch.zeros(1, 1, 28, 28)  # one image, on the CPU: over hundreds of specs this costs less than shape checks on
# the meta device, whose Python decompositions (BatchNorm's above all) are slower than the arithmetic


def random_spec(rng: random.Random) -> ArchSpec:
    """Any spec the factory accepts field-wise: padding, bias-free convs, squeeze BN, pool-only transitions,
    separable convs, every head."""
    n_blocks = rng.randint(1, 4)
    head = rng.choice(HEADS)
    blocks = [[rng.randint(1, 40) for _ in range(rng.randint(1, 5))] for _ in range(n_blocks)]
    if head == "direct":
        blocks[-1][-1] = 10  # the logits: any other width is a field error (tested below), not a shape question
    n_convs = sum(map(len, blocks))
    return ArchSpec(
        blocks=tuple(map(tuple, blocks)),
        transitions=tuple(rng.choice([0, rng.randint(1, 24)]) for _ in range(n_blocks - 1)),
        head=head,
        dropout=rng.choice([0.0, 0.05, 0.2]),
        dropout_after=tuple(rng.sample(range(n_convs), rng.randint(0, n_convs))),
        padding=rng.choice([(), tuple(rng.randint(0, 1) for _ in range(n_blocks))]),
        bias=rng.random() < 0.5,
        squeeze_bn=rng.random() < 0.5,
        separable=rng.random() < 0.5,
    )


def reference(spec: ArchSpec) -> nn.Sequential:
    """The layers the spec describes, built by hand from the documented rules with no size checks (fc: lazy)."""
    layers, c, conv, last = [], spec.in_channels, 0, sum(map(len, spec.blocks)) - 1
    padding = spec.padding or (0,) * len(spec.blocks)
    for b, widths in enumerate(spec.blocks):
        for w in widths:
            if spec.separable and conv > 0:  # depthwise 3x3 (no bias), then a 1x1 to the width
                layers += [nn.Conv2d(c, c, 3, padding=padding[b], groups=c, bias=False),
                           nn.Conv2d(c, w, 1, bias=spec.bias)]
            else:
                layers.append(nn.Conv2d(c, w, 3, padding=padding[b], bias=spec.bias))
            layers.append(nn.BatchNorm2d(w))
            if not (spec.head == "direct" and conv == last):
                layers.append(nn.ReLU())
                if conv in spec.dropout_after and spec.dropout > 0:
                    layers.append(nn.Dropout(spec.dropout))
            c, conv = w, conv + 1
        if b < len(spec.blocks) - 1:
            if t := spec.transitions[b]:
                layers.append(nn.Conv2d(c, t, 1, bias=not spec.squeeze_bn))
                layers += [nn.BatchNorm2d(t), nn.ReLU()] if spec.squeeze_bn else []
                c = t
            layers.append(nn.MaxPool2d(2))
    if spec.head == "conv":
        layers.append(nn.Conv2d(c, spec.num_classes, 1, bias=not spec.squeeze_bn))
        layers += [nn.BatchNorm2d(spec.num_classes)] if spec.squeeze_bn else []
    if spec.head == "fc":
        layers += [nn.Flatten(), nn.LazyLinear(spec.num_classes)]
    else:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        layers += [nn.Linear(c, spec.num_classes)] if spec.head == "gap" else []
    return nn.Sequential(*layers).eval()


def describe(model: nn.Module) -> list[tuple]:
    """Each module's type and the attributes that set its parameters and shapes."""
    rows = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            rows.append(("conv", m.in_channels, m.out_channels, m.kernel_size, m.padding, m.groups, m.bias is not None))
        elif isinstance(m, (nn.Linear, nn.LazyLinear)):
            rows.append(("linear", m.out_features, m.bias is not None))
        elif isinstance(m, nn.Dropout):
            rows.append(("dropout", m.p))
        else:
            rows.append((type(m).__name__,))
    return rows


def valid_random_specs(seed: int, n: int) -> tuple[list[ArchSpec], list[ArchSpec]]:
    rng, valid, invalid = random.Random(seed), [], []
    for _ in range(n):
        spec = random_spec(rng)
        try:
            spec.validate()
            valid.append(spec)
        except SpecError as e:
            assert "28x28" in str(e), e  # the generator makes only shape problems
            invalid.append(spec)
    return valid, invalid


def test_param_count_matches_torch_over_many_random_specs():
    valid, _ = valid_random_specs(0, 600)
    assert len(valid) > 200  # the checks below really ran on many specs
    assert {s.head for s in valid} == set(HEADS) and {s.bias for s in valid} == {True, False}
    assert any(0 in s.transitions for s in valid) and any(s.squeeze_bn and any(s.transitions) for s in valid)
    assert any(1 in s.padding for s in valid) and any(0 in s.padding for s in valid)
    assert {s.separable for s in valid} == {True, False}
    for spec in valid:
        model, ref = spec.build(), reference(spec)
        assert spec.num_params() == count_params(model), spec
        with torch.inference_mode():
            assert ref(X).shape == (1, 10)  # also materializes the fc head's lazy linear layer
        assert describe(model) == describe(ref), spec  # the documented layer rules, module by module
        assert count_params(ref) == spec.num_params(), spec


def test_validate_agrees_with_torch_on_what_fits():
    """validate() rejects exactly the specs whose forward pass would fail on a 28x28 image."""
    valid, invalid = valid_random_specs(1, 400)
    assert len(valid) > 100 and len(invalid) > 100
    with torch.inference_mode():
        for spec in valid:
            assert spec.build().eval()(X).shape == (1, 10)
        for spec in invalid:  # the same layers built by hand, without the plan's size check: torch fails too
            with pytest.raises(RuntimeError, match="too small|greater than actual input size"):
                reference(spec)(X)


def test_macs_match_forward_hooks():
    """MACs from the spec equal those counted on the real modules' outputs."""
    valid, _ = valid_random_specs(2, 300)
    assert len(valid) > 100
    for spec in [*PRESETS.values(), *valid]:
        model, counted = spec.build().eval(), []

        def hook(m, _inp, out, counted=counted):
            k = (m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups if isinstance(m, nn.Conv2d)
                 else m.in_features)
            counted.append(out[0].numel() * k)

        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.register_forward_hook(hook)
        with torch.inference_mode():
            model(X)
        assert spec.macs() == sum(counted), spec
    assert PRESETS["seed"].macs() == 3_280_448


def convs(model: nn.Module) -> list[tuple]:
    return [(c.in_channels, c.out_channels, c.kernel_size[0], c.padding[0], c.bias is not None)
            for c in model if isinstance(c, nn.Conv2d)]


@pytest.mark.parametrize("name, params", [
    ("seed", 17_666), ("firekind-6174", 6_174), ("nitinvig-7070", 7_070), ("nas20k-14088", 14_088), ("small", 9_858),
    ("nas20k-19674", 19_674), ("nas20k-14838", 14_838), ("nas20k-separable-4578", 4_578),
])
def test_preset_counts(name, params):
    spec = PRESETS[name]
    assert spec.num_params() == params == count_params(spec.build())
    assert spec.build().eval()(X).shape == (1, 10)


@pytest.mark.parametrize("max_params", [20_000, 14_089, 14_088, 8_000, 6_000])
def test_scaled_is_the_widest_even_copy_under_the_budget(max_params):
    ours = PRESETS["nas20k-14088"]
    small = scaled(ours, max_params)
    assert small.num_params() == count_params(small.build()) < max_params
    assert (small == ours) == (max_params > 14_088)  # a budget that admits the design keeps it as it is
    assert small.blocks[-1][-1] == 10 and small.head == "direct" and small.padding == ours.padding  # only widths change
    widths = [w for b in small.blocks for w in b][:-1]
    assert all(w % 2 == 0 and w >= 4 for w in widths)
    assert all(new <= old for new, old in zip(widths, [w for b in ours.blocks for w in b], strict=False))
    wider = scaled(ours, max_params + 3_000)  # more budget never narrows it
    assert all(w >= v for a, b in zip(wider.blocks, small.blocks, strict=True) for w, v in zip(a, b, strict=True))


def test_scaled_gives_up_below_a_tenth_of_the_widths():
    assert scaled(PRESETS["nas20k-14088"], 500) is None


def test_seed_preset_is_the_reference_model():
    model = PRESETS["seed"].build()
    assert convs(model) == [(1, 8, 3, 0, True), (8, 16, 3, 0, True), (16, 32, 3, 0, True), (32, 8, 1, 0, True),
                            (8, 16, 3, 0, True), (16, 16, 3, 0, True)]
    assert isinstance(model[-1], nn.Linear) and model[-1].in_features == 16 * 7 * 7


def test_firekind_preset_layers():
    """Padding 1 in the first two blocks, plain max-pools, the last 3x3 conv gives the 10 logits (BN, no ReLU), GAP,
    no Linear."""
    model = PRESETS["firekind-6174"].build()
    assert convs(model) == [(1, 8, 3, 1, True), (8, 8, 3, 1, True), (8, 12, 3, 1, True), (12, 12, 3, 1, True),
                            (12, 16, 3, 0, True), (16, 10, 3, 0, True)]
    kinds = [type(m).__name__ for m in model]
    assert kinds.count("MaxPool2d") == 2 and kinds.count("Dropout") == 2 and "Linear" not in kinds
    assert kinds[-4:] == ["Conv2d", "BatchNorm2d", "AdaptiveAvgPool2d", "Flatten"]
    assert ([i for i, k in enumerate(kinds) if k == "MaxPool2d"]
            == [i + 1 for i, k in enumerate(kinds) if k == "Dropout"])  # Dropout, then pool


def test_nitinvig_preset_layers():
    """Bias-free 1x1 convs followed by BatchNorm (+ ReLU in the transition), a conv head, no Linear."""
    model = PRESETS["nitinvig-7070"].build()
    assert [c for c in convs(model) if c[2] == 1] == [(20, 10, 1, 0, False), (20, 10, 1, 0, False)]
    assert all(c[4] for c in convs(model) if c[2] == 3)  # the 3x3 convs keep their bias
    kinds = [type(m).__name__ for m in model]
    assert "Linear" not in kinds and "Dropout" not in kinds
    one_by_one = [i for i, m in enumerate(model) if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [kinds[i + 1] for i in one_by_one] == ["BatchNorm2d", "BatchNorm2d"]
    assert kinds[one_by_one[0] + 2 : one_by_one[0] + 4] == ["ReLU", "MaxPool2d"]
    assert kinds[one_by_one[1]:] == ["Conv2d", "BatchNorm2d", "AdaptiveAvgPool2d", "Flatten"]


def test_bias_free_and_squeeze_bn_save_what_they_should():
    base = ArchSpec(blocks=((8, 16), (16,)), transitions=(8,), head="conv")
    # one bias per 3x3 channel
    assert base.num_params() - ArchSpec(**{**base.to_dict(), "bias": False}).num_params() == 8 + 16 + 16
    # squeeze BN: the 1x1 biases (8 + 10) go, a BatchNorm (2 per channel) comes after each 1x1 conv
    assert (ArchSpec(**{**base.to_dict(), "squeeze_bn": True}).num_params() - base.num_params()
            == 2 * (8 + 10) - (8 + 10))
    pool_only = ArchSpec(blocks=((8, 16), (16,)), transitions=(0,), head="conv")
    # no 1x1; the next conv reads 16 channels, not 8
    assert pool_only.num_params() - base.num_params() == (16 - 8) * 16 * 9 - (16 * 8 + 8)


def test_batchnorm_and_dropout_placement():
    spec = ArchSpec(blocks=((8, 16), (16, 16)), transitions=(8,), head="gap", dropout=0.1, dropout_after=(1, 3))
    kinds = [type(m).__name__ for m in spec.build()]
    assert kinds == [
        "Conv2d", "BatchNorm2d", "ReLU",
        "Conv2d", "BatchNorm2d", "ReLU", "Dropout",
        "Conv2d", "MaxPool2d",
        "Conv2d", "BatchNorm2d", "ReLU",
        "Conv2d", "BatchNorm2d", "ReLU", "Dropout",
        "AdaptiveAvgPool2d", "Flatten", "Linear",
    ]
    assert all(m.p == 0.1 for m in spec.build() if isinstance(m, nn.Dropout))
    no_dropout = ArchSpec(blocks=((8,), (16,)), transitions=(8,), dropout=0.0, dropout_after=(0,))
    assert not any(isinstance(m, nn.Dropout) for m in no_dropout.build())


@pytest.mark.parametrize("name, module", [("silu", nn.SiLU), ("gelu", nn.GELU)])
def test_activation_replaces_every_relu_and_costs_no_parameters(name, module):
    """Also the one after a squeeze's BatchNorm; a spec recorded before `activation` existed builds with ReLU."""
    relu = ArchSpec(blocks=((8, 16), (16, 10)), transitions=(8,), head="direct", squeeze_bn=True)
    other = replace(relu, activation=name)
    kinds = [type(m) for m in relu.build()]
    assert kinds.count(nn.ReLU) == 4  # 3 of the 3x3 convs (not the logits'), the squeeze's
    assert [module if k is nn.ReLU else k for k in kinds] == [type(m) for m in other.build()]
    assert other.num_params() == relu.num_params() and other.macs() == relu.macs()
    assert ArchSpec.from_json(other.to_json()) == other
    old = {k: v for k, v in other.to_dict().items() if k != "activation"}
    assert ArchSpec.from_dict(old).activation == "relu"


def test_separable_convs_cost_what_they_should():
    """Each 3x3 conv after the image's first: c * 9 (depthwise, no bias) + c * width (+ width with bias) instead of
    c * width * 9 (+ width); a spec recorded before `separable` existed builds without it."""
    plain = ArchSpec(blocks=((8, 16), (24, 10)), transitions=(0,), head="direct", bias=False)
    separable = replace(plain, separable=True)
    convs = ((8, 16), (16, 24), (24, 10))  # (in, out) of every 3x3 conv but the first
    assert plain.num_params() - separable.num_params() == sum(9 * c * w - (9 * c + c * w) for c, w in convs)
    model = separable.build()
    depthwise = [m for m in model if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [(m.in_channels, m.groups, m.bias) for m in depthwise] == [(c, c, None) for c, _ in convs]
    assert count_params(model) == separable.num_params() and model.eval()(X).shape == (1, 10)
    assert ArchSpec.from_json(separable.to_json()) == separable
    old = {k: v for k, v in separable.to_dict().items() if k != "separable"}
    assert ArchSpec.from_dict(old).separable is False


def test_json_round_trip_and_file_load(tmp_path):
    for spec in PRESETS.values():
        assert ArchSpec.from_json(spec.to_json()) == spec
    path = tmp_path / "spec.json"
    path.write_text(PRESETS["firekind-6174"].to_json())
    assert ArchSpec.load(path) == PRESETS["firekind-6174"]
    assert ArchSpec(blocks=((8,), (8,)), transitions=(0,)).padding == (0, 0)  # () means no padding anywhere


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"blocks": [[8]], "transitions": [], "colour": 1}', "unknown spec field"),
        ('{"blocks": [[8]]', "not valid JSON"),
        ('{"blocks": [], "transitions": []}', "blocks must be"),
        ('{"blocks": [[8], [8]], "transitions": []}', "transition"),
        ('{"blocks": [[8], [8]], "transitions": [-1]}', "transition"),
        ('{"blocks": [[8]], "transitions": [], "head": "mlp"}', "head must be"),
        ('{"blocks": [[8]], "transitions": [], "dropout_after": [3]}', "dropout_after"),
        ('{"blocks": [[8], [8]], "transitions": [0], "padding": [1]}', "padding must list"),
        ('{"blocks": [[8]], "transitions": [], "padding": [2]}', "padding must list"),
        ('{"blocks": [[8]], "transitions": [], "bias": "yes"}', "bias, squeeze_bn and separable"),
        ('{"blocks": [[8]], "transitions": [], "separable": 1}', "bias, squeeze_bn and separable"),
        ('{"blocks": [[8]], "transitions": [], "activation": "tanh"}', "activation must be one of relu, silu, gelu"),
        ('{"blocks": [[8, 12]], "transitions": [], "head": "direct"}', "head 'direct' .* must be 10, got 12"),
        ('{"blocks": [[8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]], "transitions": []}', "does not fit a 28x28 image"),
        ('[1, 2]', "JSON object"),
    ],
)
def test_bad_specs_give_clear_errors(bad, message):
    with pytest.raises(SpecError, match=message):
        ArchSpec.from_json(bad).validate()


def test_direct_head_with_a_wrong_last_width_is_a_spec_error():
    firekind = PRESETS["firekind-6174"].to_dict()
    with pytest.raises(SpecError, match="direct"):
        ArchSpec(**{**firekind, "blocks": [[8, 8], [12, 12], [16, 12]]}).num_params()
    # width = classes is fine
    assert ArchSpec(**{**firekind, "num_classes": 16, "blocks": [[8, 8], [12, 12], [16]]}).num_params() > 0


def test_summary_table():
    text = summary(PRESETS["seed"])
    assert "Conv2d-1" in text and "[-1, 8, 26, 26]" in text and "Total params: 17,666" in text
    assert "Linear-" in text and "[-1, 10]" in text
    assert f"Forward MACs per image: {PRESETS['seed'].macs():,}" in text
    text = summary(PRESETS["firekind-6174"])
    assert "[-1, 8, 28, 28]" in text and "Total params: 6,174" in text and "Linear" not in text


def test_the_checklist_reads_the_head_off_the_built_model():
    """Each head the factory builds gives its logits through a global average pool or a linear layer; a model
    whose logits come from a conv or a local pool fails the line, whatever its spec calls the head."""
    from torch import nn

    from nas20k.base.mission import Budget, checklist
    from nas20k.core.factory import model_facts

    expected = {"gap": "linear layer", "fc": "linear layer", "conv": "global average pool",
                "direct": "global average pool"}
    for spec in PRESETS.values():
        assert spec.facts(15).logits_from == expected[spec.head]
    conv_logits = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1), nn.Conv2d(8, 10, 26),
                                nn.Flatten())
    local_pool = nn.Sequential(nn.Conv2d(1, 10, 3), nn.AvgPool2d(2), nn.Flatten())
    for model in (conv_logits, local_pool):
        facts = model_facts(model, 15, "gap")
        line, ok = next(item for item in checklist(facts, None, Budget()) if item[0].startswith("GAP or FC head"))
        assert ok is False and "neither" in line
    assert model_facts(conv_logits, 15, "gap").dropout == 0.1 and model_facts(local_pool, 15, "gap").dropout == 0.0
