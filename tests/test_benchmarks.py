"""Every benchmark script runs: `python benchmarks/<script>.py --smoke`, its real code path at its smallest setting,
exits 0 and prints its result (a stale import or a broken measurement fails here, not in a user's long run). The
shared machinery (side_by_side.py, fused_nets.py) still imports."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
SCRIPTS = [p for p in BENCHMARKS if 'if __name__ == "__main__":' in p.read_text()]
SHARED = [p for p in BENCHMARKS if p not in SCRIPTS]

NUM = r"[+-]?\d[\d,]*\.\d+"
# per script, what its --smoke run must print: a measured number in its table or last line
RESULT = {
    "activations": rf"\| #35 \(14,568 params\) \| silu \| 1 \| {NUM} \| {NUM} \|",
    "bn_recalibration": rf"2 distinct runs.*\nupdate_bn \(Dropout on\), 10k +val {NUM} ± {NUM}",
    "cpu_precision": rf"ratio {re.escape('cheap Dropout masks / torch')}.*: {NUM}|this CPU has no hardware bf16",
    "eta": rf"\| 5 \| search \| {NUM}-{NUM} min \| {NUM} min \| [+-]\d+ % \|",
    "evaluation": rf"winner 15,486 params: +{NUM} s at 1,000.*\nratio batch 1,000 / batch 500 seconds .*: {NUM}",
    "fused": rf"ratio fused/separate \(geometric mean of 2\): {NUM}",
    "gpu": rf"ratios: step_speedup_128 {NUM}x|no CUDA device",
    "jobs": rf"\(b\) --jobs 2: .*: \d[\d,]* img/s together\nratio b/a: {NUM}",
    "precision_parity": rf"\| design \| variant \|.*\n.*\n\| firekind-6174 \(15 ep\) \| fp32 \| 1 \| {NUM} \| {NUM} \|",
    "pruners": r"\| asha \| [1-9]\d* \| \d+ \| [1-9]\d* \(",
    "rung_replay": r"smallest-992\.db .* reached 9;.*\ntotal: reached 9 [1-9]\d*",
    "rung_ties": r"smallest-992\.db .* epochs recorded +[1-9]\d*, replayed >= +\d+, > +\d+;.*\ntotal: recorded [1-9]",
    "screening": r"epoch 1: 1 studies, median Spearman -?\d\.\d\d, top 3 kept \d/3",
    "search_time": rf"machine ratio \(median of [1-9]\d*\): {NUM}\n.* at sbs-t-74d2d0e's machine speed; ratio {NUM}",
    "small_recipes": rf"\| nas20k-5826-scaled \| as searched \| 1 \| {NUM} \| {NUM} \|",
    "throughput": rf"\(b\) nas20k trainer: +\d[\d,]* img/s\nratio b/a: {NUM}",
    "val_selection": rf"\| 5 \| 1 \| [01]/1 \| {NUM} \| {NUM} \|",
    "zoo_recheck": rf"\| nas20k-separable-3680 \| 3,680 \| 3\.8k/15 \| \d, \d+, {NUM} ± {NUM} % \| 2, {NUM}",
}


def test_every_script_has_a_result() -> None:
    assert sorted(RESULT) == [p.stem for p in SCRIPTS]


@pytest.mark.slow
@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_smoke(path: Path) -> None:
    env = {**os.environ, "NAS20K_DATA_DIR": str(DATA_DIR)}
    run = subprocess.run([sys.executable, str(path.relative_to(ROOT)), "--smoke"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.search(RESULT[path.stem], run.stdout), run.stdout[-3000:]


@pytest.mark.parametrize("path", SHARED, ids=[p.stem for p in SHARED])
def test_shared_module_imports(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
