"""The trials frame as a table a person reads in a terminal: the columns that fit 80 characters (all of them with
`wide`), scores as percentages, the sd in points."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd


def pct(x: float | None, sd: float | None = None) -> str:
    """99.40% (± 0.05% with an sd); "-" when missing or NaN. The one format of a score everywhere."""
    return "-" if x is None or x != x else f"{x:.2%}" + (f" ± {sd:.2%}" if sd else "")


NARROW = ["trial", "params", "seeds", "mean_val", "sd_val", "test_last3", "epochs", "status"]  # what fits 80 columns
WIDE = [*NARROW[:-1], "val_score", "seconds", "blocks", "head", "optimizer", "lr", "schedule", "warm_start", "move",
        "status"]
HEADERS = {"mean_val": "mean val", "sd_val": "sd", "test_last3": "test (last 3)", "val_score": "val",
           "warm_start": "warm start"}


def table(frame: pd.DataFrame, wide: bool) -> Table:
    """The frame's rows with the columns that fit (all with `wide`); percentages as such, sd in points."""
    import pandas as pd

    cols = WIDE if wide else [c for c in NARROW if c in frame.columns]
    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in cols:
        table.add_column(HEADERS.get(c, c), justify="left" if frame[c].dtype == object else "right", no_wrap=True)
    fmt = {"val_score": pct, "mean_val": pct, "test_last3": pct, "sd_val": lambda v: f"{v * 100:.2f}",
           "lr": lambda v: f"{v:.3g}", "params": lambda v: f"{int(v):,}", "seconds": lambda v: f"{v:.0f}"}
    for _, row in frame.iterrows():
        table.add_row(*("-" if pd.isna(row[c]) or row[c] == "" else fmt.get(c, str)(row[c]) for c in cols))
    return table
