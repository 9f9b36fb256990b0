"""Does an exponential moving average of the weights lift a net under 4,000 params by more than its seeds' spread?

Two designs under 3,800 params with their warm-start recipes, 15 epochs: public-3762 (the smallest public net at
>= 99.4 %, batch 32, OneCycle to 0.1) and nas20k-5826 scaled to 3,570 params (Adam, step schedule, batch 128).
Each trains without and with an EMA of the weights (decay 0.999, updated every step; the average is what is
evaluated, scored and exported), on the same seeds, in the runtime `auto` picks here (bf16 on a CPU with hardware
bf16). Prints one row per run, then mean ± sd of the val score and of test accuracy (last 3 epochs).

    python benchmarks/ema.py [--seeds 3] [--decay 0.999] [--jobs 2] [--data-dir ../shared/data]
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from side_by_side import compare

from nas20k.core.data import default_data_dir
from nas20k.core.runtime import resolve
from nas20k.core.space import warm_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    starts = warm_start(15, 0, 3800)
    designs = {"public-3762": starts["public-3762"], "nas20k-5826-scaled": starts["nas20k-5826-scaled"]}
    runtime = resolve("cpu", "auto")
    variants = {"no EMA": lambda c: (c, runtime),
                f"EMA {args.decay}": lambda c: (replace(c, train=replace(c.train, ema=args.decay)), runtime)}
    compare(designs, variants, args.seeds, args.jobs, str(args.data_dir or default_data_dir()))


if __name__ == "__main__":
    main()
