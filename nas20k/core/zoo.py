"""The zoo: known designs as data, each a candidate (spec and recipe) with the evidence for it, read by the warm
start. The packaged zoo (`zoo.json` next to this file) is read-only and holds only committed studies' confirmed
winners (and the public designs they were measured against, with their source); a user's own zoo
(`NAS20K_ZOO`, default ~/.config/nas20k/zoo.json) grows with `nas20k zoo add`, and a new study warm-starts from both.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from nas20k.base.errors import UserError, known_fields
from nas20k.base.mission import Z
from nas20k.core.factory import ArchSpec
from nas20k.core.recipe import TrainConfig

PACKAGED = Path(__file__).with_name("zoo.json")
GOALS = ("accuracy", "smallest")


class ZooError(UserError):
    """A zoo file that cannot be read, or an entry that cannot go in; one readable line."""


@dataclass(frozen=True)
class Evidence:
    """Where a design's figures come from: a study's trial and its runs over seeds, on one val split."""

    study: str  # the study file (sqlite) or storage, as the zoo's reader can find it
    study_name: str
    trial: int
    budget: tuple[int, int]  # (max_params, max_epochs) of that study
    goal: str
    epochs: int
    seeds: int
    val_mean: float
    val_sd: float
    test_mean: float | None  # reported, never read to choose
    hardware: str | None
    torch: str | None
    date: str
    split_seed: int = 0  # the val split it was scored on
    val_size: int = 5000
    found_in: str | None = None  # "study#trial" where the search sampled it, when not the study above

    @classmethod
    def from_dict(cls, d: dict) -> Evidence:
        d = known_fields(cls, d, "zoo evidence", ZooError)
        return cls(**{**d, "budget": tuple(d["budget"])})


@dataclass(frozen=True)
class ZooEntry:
    name: str
    spec: ArchSpec
    recipe: TrainConfig  # its epochs and seed are a study's own when it is queued
    # The goals for which it follows the lead into a new study: designs that, queued after another lead, outlasted
    # the last rung in the committed studies (docs/design.md#warm-start); the others were pruned there nearly always.
    follows: tuple[str, ...] = ()
    source: str = ""  # a public design's origin
    evidence: Evidence | None = None
    notes: str = ""

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        recipe = self.recipe.to_dict()
        del recipe["epochs"], recipe["seed"]
        return {**d, "spec": self.spec.to_dict(), "recipe": recipe, "follows": list(self.follows),
                "evidence": asdict(self.evidence) if self.evidence else None}

    @classmethod
    def from_dict(cls, d: dict) -> ZooEntry:
        d = known_fields(cls, d, "zoo entry", ZooError)
        missing = {"name", "spec", "recipe"} - set(d)
        if missing:
            raise ZooError(f"zoo entry without {', '.join(sorted(missing))}: {d}")
        if bad := set(d.get("follows", ())) - set(GOALS):
            raise ZooError(f"zoo entry {d['name']!r} follows unknown goal(s): {', '.join(sorted(bad))}")
        ev = d.get("evidence")
        return cls(**{**d, "spec": ArchSpec.from_dict(d["spec"]), "recipe": TrainConfig.from_dict(d["recipe"]),
                      "follows": tuple(d.get("follows", ())), "evidence": Evidence.from_dict(ev) if ev else None})


def load(path: Path) -> list[ZooEntry]:
    """The entries of a zoo file, in its order (the warm start's: the first that fits leads); none if it is absent."""
    if not path.exists():
        return []
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"zoo file is not valid JSON: {path}: {e}") from None
    if not isinstance(d, dict) or set(d) != {"entries"} or not isinstance(d["entries"], list):
        raise ZooError(f'a zoo file is {{"entries": [...]}}: {path}')
    entries = [ZooEntry.from_dict(e) for e in d["entries"]]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ZooError(f"zoo file names a design twice: {path}")
    return entries


def save(path: Path, entries: list[ZooEntry]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"entries": [e.to_dict() for e in entries]}, indent=1) + "\n")
    tmp.replace(path)  # a reader never sees half a file


def in_evidence_order(entries: list[ZooEntry]) -> list[ZooEntry]:
    """The entries with a design moved ahead of the one before it in its group (scored at one goal, budget and val
    split) where its val mean beats it by more than Z standard errors of the difference, until none does. The first
    that fits leads a warm start, so the evidence decides the lead where it tells designs apart, and a tie (e.g.
    0.002 points between a 5-seed and a 3-seed mean) leaves the order as it was."""
    def beats(a: Evidence, b: Evidence) -> bool:
        return a.val_mean - b.val_mean > Z * math.sqrt(a.val_sd**2 / a.seeds + b.val_sd**2 / b.seeds)

    groups: dict[tuple, list[int]] = {}
    for i, e in enumerate(entries):
        if e.evidence:
            groups.setdefault((e.evidence.goal, e.evidence.budget, e.evidence.split_seed), []).append(i)
    out = list(entries)
    for places in groups.values():
        moved = True
        while moved:  # each move puts a higher mean ahead of a lower one, so this ends
            moved = False
            for i, j in itertools.pairwise(places):
                if beats(out[j].evidence, out[i].evidence):
                    out[i], out[j], moved = out[j], out[i], True
    return out


def user_zoo() -> Path:
    if env := os.environ.get("NAS20K_ZOO"):
        return Path(env)
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "nas20k" / "zoo.json"


def entries(user: Path | None = None) -> list[ZooEntry]:
    """The packaged zoo, then the user's (a user entry never shadows a packaged one: `add` refuses the name)."""
    return load(PACKAGED) + load(user or user_zoo())


def add(entry: ZooEntry, user: Path | None = None) -> Path:
    """Append `entry` to the user's zoo; the packaged one is read-only. Refuses a name either already holds."""
    path = user or user_zoo()
    if entry.evidence is None or entry.evidence.seeds < 2:
        raise ZooError(f"{entry.name}: only a confirmed winner (2 or more seeds) goes into the zoo; "
                       "run `nas20k confirm` first")
    mine = load(path)
    if entry.name in {e.name for e in load(PACKAGED) + mine}:
        raise ZooError(f"the zoo already holds a design named {entry.name!r}; give another --name")
    save(path, [*mine, entry])
    return path

