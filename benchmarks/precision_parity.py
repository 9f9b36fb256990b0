"""Accuracy parity of the CPU's bf16 training path against fp32, before bf16 becomes `--precision auto`'s choice.

Two designs, 3 seeds each, fp32, bf16 (+ channels_last) and bf16 with the cheap Dropout masks (`--precision auto`
on such a CPU) side by side on the full split (55k train, 5k val): firekind-6174 with its published recipe for 15
epochs, and the committed winner (studies/best: spec + recipe) for 20 epochs; `--designs separable` adds the
smallest goal's lead warm start, nas20k-separable-3680, 15 epochs. Prints one row per run, then mean ± sd of the
val score and of test accuracy (both means of the last 3 epochs) per design and precision. Runs go two at a time,
one thread each (what a 2-core search does). The CPU path is deterministic per seed, so a variant or design
measured before can be left out (`--variants`, `--designs`) and its rows read from the log.

    python benchmarks/precision_parity.py [--seeds 3] [--jobs 2] [--variants fp32,bf16,bf16+masks]
        [--designs firekind,winner,separable] [--data-dir ../shared/data] [--smoke]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from side_by_side import compare

from nas20k.core.data import default_data_dir
from nas20k.core.factory import ArchSpec
from nas20k.core.runtime import Runtime
from nas20k.core.space import Candidate, warm_start
from nas20k.core.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": Runtime(), "bf16": Runtime(precision="bf16", channels_last=True),
              "bf16+masks": Runtime(precision="bf16", channels_last=True, cheap_dropout=True)}


def designs() -> dict[str, Candidate]:
    best = ROOT / "studies" / "best"
    winner = Candidate(ArchSpec.load(best / "spec.json"),
                       TrainConfig.from_dict(json.loads((best / "metrics.json").read_text())["train"]))
    return {"firekind": ("firekind-6174 (15 ep)", warm_start(15)["firekind-6174"]),
            "winner": ("winner 15,486 (20 ep)", winner),
            "separable": ("nas20k-separable-3680 (15 ep)", warm_start(15)["nas20k-separable-3680"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(PRECISIONS))
    parser.add_argument("--designs", default="firekind,winner")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--smoke", action="store_true", help="the smallest setting (a test): the first design under "
                        "the first two variants, 1 seed, 1 epoch on 512 images")
    args = parser.parse_args()
    known = designs()
    unknown = [name for name in [*args.variants.split(","), *args.designs.split(",")]
               if name not in PRECISIONS and name not in known]
    if unknown:
        parser.error(f"unknown variant or design: {', '.join(unknown)} (variants: {', '.join(PRECISIONS)}; "
                     f"designs: {', '.join(known)})")
    variants = {p: lambda c, rt=PRECISIONS[p]: (c, rt) for p in args.variants.split(",")}
    chosen = dict(known[name] for name in args.designs.split(","))
    compare(chosen, variants, args.seeds, args.jobs, str(args.data_dir or default_data_dir()), smoke=args.smoke)


if __name__ == "__main__":
    main()
