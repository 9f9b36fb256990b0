"""The committed exports are what the README's results table points at: each reloads with plain torch, scores on
the 10,000 test images what its metrics.json says, and lists the seeds its mean is over."""

import json
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR

from nas20k.core.data import load_mnist
from nas20k.core.factory import ArchSpec

STUDIES = Path(__file__).resolve().parent.parent / "studies"


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["best", "smallest"])
def test_a_committed_export_reloads_and_scores_what_it_says(folder):
    metrics = json.loads((STUDIES / folder / "metrics.json").read_text())
    model = torch.export.load(str(STUDIES / folder / "model.pt2")).module()
    test = load_mnist(DATA_DIR, download=False).test
    with torch.no_grad():
        batches = zip(test.x.split(1000), test.y.split(1000), strict=True)
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in batches)
    assert correct / len(test.y) == pytest.approx(metrics["test_acc"], abs=1e-4)
    seeds = {s["seed"] for s in metrics["seeds"]}
    assert len(seeds) == len(metrics["seeds"]) == metrics["n_seeds"]
    assert ArchSpec.load(STUDIES / folder / "spec.json").num_params() == metrics["params"]
