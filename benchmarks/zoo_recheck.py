"""Re-confirm zoo designs on a val split they were not chosen on (issue 40: about 2,000 trials were ranked on split
seed 0, so its scores are adaptively overfit). For each named design (default: every packaged entry with evidence),
the real command, at the budget of its evidence:

    nas20k search --start NAME --trials 1 --no-local-search --confirm-top 1 --confirm-seeds N --split-seed S
                  --max-params P --max-epochs E --study-name zoo-NAME-splitS --storage sqlite:///OUT

(N: 5 where the evidence has 5 or more seeds, else 3), one study per design in one file. Then a table: the
evidence it was chosen on against the new split, val mean ± sd over n seeds, and test (reported, never read).
`--write` puts the new figures into the packaged zoo as each design's evidence, the old trial kept as `found_in`
(the only way a figure in the zoo changes), and moves a design ahead of another in its group where the new figures
tell them apart (`zoo.in_evidence_order`): the first that fits leads a warm start. `--smoke`: one design, 1 epoch
on 1,500 images, 2 seeds, in a temp dir.

    python benchmarks/zoo_recheck.py nas20k-separable-3680 --split-seed 1 [--write]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import optuna

from nas20k.core import zoo
from nas20k.readers.record import StudyMeta, search_records
from nas20k.readers.results import zoo_entry

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["--limit", "1500", "--val-size", "500", "--max-epochs", "1"]


def fig(mean: float | None, sd: float | None = None) -> str:
    """A val or test figure in percent, three decimals (the results document's format)."""
    return "-" if mean is None else f"{100 * mean:.3f}" + ("" if sd is None else f" ± {100 * sd:.3f}") + " %"


def study_name(name: str, split_seed: int) -> str:
    return f"zoo-{name}-split{split_seed}"


def recheck(entry: zoo.ZooEntry, split_seed: int, out: Path, jobs: int, smoke: bool) -> None:
    """Run (or resume: the same command) the design's re-confirmation on `split_seed`, with its evidence's budget
    and goal (a smallest goal's --target read off that study; no shrink search)."""
    ev = entry.evidence
    seeds = 2 if smoke else 5 if ev.seeds >= 5 else 3
    epochs = [] if smoke else ["--max-epochs", str(ev.budget[1])]
    goal = ["--goal", ev.goal]
    if ev.goal == "smallest":
        found = optuna.load_study(study_name=ev.study_name, storage=f"sqlite:///{ROOT / ev.study}")
        goal += ["--target", str(StudyMeta.of(found).goal.target), "--no-shrink"]
    cmd = [sys.executable, "-m", "nas20k", "search", "--start", entry.name, "--trials", "1", "--no-local-search",
           "--confirm-top", "1", "--confirm-seeds", str(seeds), "--split-seed", str(split_seed), *goal,
           "--max-params", str(ev.budget[0]), *epochs, *(SMOKE if smoke else []), "--jobs", str(jobs), "--quiet",
           "--study-name", study_name(entry.name, split_seed), "--storage", f"sqlite:///{out}",
           "--artifacts", str(out.with_suffix(".artifacts"))]
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def rechecked(entry: zoo.ZooEntry, split_seed: int, out: Path) -> zoo.ZooEntry:
    """The design with its evidence from the re-confirmation study: the trial the warm start queued it as (the same
    design, or this refuses), its seeds on the new split; where it was chosen is kept as `found_in`."""
    name = study_name(entry.name, split_seed)
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out}")
    # the completed one: a run interrupted and retrained leaves its first trial `interrupted`, the warm start's too
    r = next(r for r in search_records(study) if r.warm_start == entry.name and r.status == "complete")
    if r.candidate is None or r.candidate.spec != entry.spec:
        raise SystemExit(f"{name}: trial #{r.number} is not {entry.name} as the zoo holds it")
    where = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    new = zoo_entry(r, StudyMeta.of(study), name, where, entry.name).evidence
    old = entry.evidence
    return replace(entry, evidence=replace(new, found_in=old.found_in or f"{old.study_name}#{old.trial}"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", help="zoo designs (default: every packaged one with evidence)")
    p.add_argument("--split-seed", type=int, default=1)
    p.add_argument("--out", type=Path, help="the study file  [default: studies/reference/zoo-split<S>.db]")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--write", action="store_true", help="put the new evidence into the packaged zoo")
    p.add_argument("--smoke", action="store_true")
    a = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    packaged = zoo.load(zoo.PACKAGED)
    names = a.names or (["nas20k-separable-3680"] if a.smoke else [e.name for e in packaged if e.evidence])
    by_name = {e.name: e for e in packaged}
    if missing := [n for n in names if n not in by_name or by_name[n].evidence is None]:
        p.error(f"no packaged zoo design with evidence named {', '.join(missing)}")
    if a.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            report(names, by_name, a.split_seed, Path(tmp) / "zoo-smoke.db", a.jobs, smoke=True)
        return
    out = (a.out or ROOT / f"studies/reference/zoo-split{a.split_seed}.db").resolve()
    if a.write and not out.is_relative_to(ROOT):
        p.error("--write cites the study file in the packaged zoo: give an --out inside the repository")
    done = report(names, by_name, a.split_seed, out, a.jobs, smoke=False)
    if a.write:
        zoo.save(zoo.PACKAGED, zoo.in_evidence_order([done.get(e.name, e) for e in packaged]))
        print(f"wrote the new evidence of {len(done)} design(s) into {zoo.PACKAGED}, in its order")


def report(names: list[str], by_name: dict[str, zoo.ZooEntry], split_seed: int, out: Path, jobs: int,
           smoke: bool) -> dict[str, zoo.ZooEntry]:
    """Re-confirm each design, then print the table; returns the designs with their new evidence."""
    done = {}
    for n in names:
        recheck(by_name[n], split_seed, out, jobs, smoke)
        done[n] = rechecked(by_name[n], split_seed, out)
    print(f"\n| design | params | budget | chosen on: split, n, val ± sd | split {split_seed}: n, val ± sd | "
          f"test: chosen on / split {split_seed} | val change |\n| --- | --- | --- | --- | --- | --- | --- |")
    for n, e in done.items():
        old, new = by_name[n].evidence, e.evidence
        print(f"| {n} | {e.spec.num_params():,} | {old.budget[0] / 1000:g}k/{old.budget[1]} | {old.split_seed}, "
              f"{old.seeds}, {fig(old.val_mean, old.val_sd)} | {new.seeds}, {fig(new.val_mean, new.val_sd)} | "
              f"{fig(old.test_mean)} / {fig(new.test_mean)} | {100 * (new.val_mean - old.val_mean):+.3f} pp |")
    return done


if __name__ == "__main__":
    main()
