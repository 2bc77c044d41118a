"""Table plumbing below the paper's tables (selectit.paper.tables) and the audit's (selectit.audit): pandas only,
so that low-level modules can build a table without importing the tables' inputs (cost, data, plans)."""

from __future__ import annotations

import pandas as pd


def finish_table(frame: pd.DataFrame, caption: str, notes: list[str]) -> pd.DataFrame:
    """A table with its caption and notes (``frame.attrs``), which the writers print around it."""
    frame.attrs["caption"] = caption
    frame.attrs["notes"] = notes
    return frame
