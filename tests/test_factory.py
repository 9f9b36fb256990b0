import random

import pytest
import torch
from torch import nn

from nas20k.factory import PRESETS, ArchSpec, SpecError, count_params, summary


def random_spec(rng: random.Random) -> ArchSpec:
    n_blocks = rng.randint(1, 4)
    blocks = tuple(tuple(rng.randint(1, 40) for _ in range(rng.randint(1, 5))) for _ in range(n_blocks))
    n_convs = sum(map(len, blocks))
    return ArchSpec(
        blocks=blocks,
        transitions=tuple(rng.randint(1, 24) for _ in range(n_blocks - 1)),
        head=rng.choice(["gap", "fc"]),
        dropout=rng.choice([0.0, 0.05, 0.2]),
        dropout_after=tuple(rng.sample(range(n_convs), rng.randint(0, n_convs))),
    )


def test_seed_preset_is_the_reference_model():
    seed = PRESETS["seed"]
    assert seed.num_params() == 17_666
    model = seed.build()
    assert count_params(model) == 17_666
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 8, (3, 3)), (8, 16, (3, 3)), (16, 32, (3, 3)), (32, 8, (1, 1)), (8, 16, (3, 3)), (16, 16, (3, 3))
    ]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert isinstance(model[-1], nn.Linear) and model[-1].in_features == 16 * 7 * 7


def test_param_count_matches_torch_over_many_random_specs():
    rng = random.Random(0)
    valid = 0
    for _ in range(400):
        spec = random_spec(rng)
        try:
            spec.validate()
        except SpecError:
            continue
        valid += 1
        assert spec.num_params() == count_params(spec.build()), spec
    assert valid > 100  # the check above really ran on many specs


def test_validate_agrees_with_torch_on_what_fits():
    """validate() rejects exactly the specs whose forward pass would fail on a 28x28 image."""
    rng = random.Random(1)
    for _ in range(60):
        spec = random_spec(rng)
        try:
            spec.validate()
            fits = True
        except SpecError as e:
            assert "28x28" in str(e)
            fits = False
        if fits:
            assert spec.build()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        else:  # build the same layers by hand, ignoring the plan's size check: torch must fail too
            with pytest.raises(RuntimeError):
                _unchecked_forward(spec)


def _unchecked_forward(spec: ArchSpec) -> None:
    x, layers, c, conv = torch.zeros(2, 1, 28, 28), [], 1, 0
    for b, widths in enumerate(spec.blocks):
        for w in widths:
            layers += [nn.Conv2d(c, w, 3), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        if b < len(spec.blocks) - 1:
            layers += [nn.Conv2d(c, spec.transitions[b], 1), nn.MaxPool2d(2)]
            c = spec.transitions[b]
    nn.Sequential(*layers)(x)


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


def test_json_round_trip_and_file_load(tmp_path):
    spec = PRESETS["small"]
    assert ArchSpec.from_json(spec.to_json()) == spec
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    assert ArchSpec.load(path) == spec


@pytest.mark.parametrize(
    "bad, message",
    [
        ('{"blocks": [[8]], "transitions": [], "colour": 1}', "unknown spec field"),
        ('{"blocks": [[8]]', "not valid JSON"),
        ('{"blocks": [], "transitions": []}', "blocks must be"),
        ('{"blocks": [[8], [8]], "transitions": []}', "transition"),
        ('{"blocks": [[8]], "transitions": [], "head": "mlp"}', "head must be"),
        ('{"blocks": [[8]], "transitions": [], "dropout_after": [3]}', "dropout_after"),
        ('{"blocks": [[8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]], "transitions": []}', "does not fit a 28x28 image"),
        ('[1, 2]', "JSON object"),
    ],
)
def test_bad_specs_give_clear_errors(bad, message):
    with pytest.raises(SpecError, match=message):
        ArchSpec.from_json(bad).validate()


def test_summary_table():
    text = summary(PRESETS["seed"])
    assert "Conv2d-1" in text and "[-1, 8, 26, 26]" in text and "Total params: 17,666" in text
    assert "Linear-" in text and "[-1, 10]" in text
    assert f"Forward MACs per image: {PRESETS['seed'].macs():,}" in text


def test_macs_match_forward_hooks():
    """MACs from the spec equal those counted on the real modules' outputs."""
    rng = random.Random(2)
    for spec in [PRESETS["seed"], PRESETS["small"], *(random_spec(rng) for _ in range(40))]:
        try:
            spec.validate()
        except SpecError:
            continue
        model, counted = spec.build(), []

        def hook(m, _inp, out):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
            counted.append(out[0].numel() * k)

        for m in model:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.register_forward_hook(hook)
        model.eval()(torch.zeros(1, 1, 28, 28))
        assert spec.macs() == sum(counted)
    assert PRESETS["seed"].macs() == 3_280_448
