"""Merging per-sample score shards (IFD, judge) into one table aligned with the samples, checked complete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from selectit.errors import IncompleteRatingsError
from selectit.fusion import read_samples


def _named(ids: Sequence[str], limit: int = 10) -> str:
    ids = list(ids)
    return ", ".join(map(repr, ids[:limit])) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def merge_sample_shards(shard_paths: Sequence[str | Path], samples_path: str | Path, what: str) -> pd.DataFrame:
    """Concatenate shards of one row per sample; every sample id exactly once, no id outside the samples.

    Rows come back in sample order (the samples' original index)."""
    samples = read_samples(samples_path)
    frames = []
    for path in shard_paths:
        frame = pq.read_table(path).to_pandas()
        frame["_shard"] = str(path)
        frames.append(frame)
    if not frames:
        raise IncompleteRatingsError(f"{what}: no shards given")
    table = pd.concat(frames, ignore_index=True)
    dup = table["id"][table["id"].duplicated(keep=False)]
    if len(dup):
        where = table[table["id"].isin(dup)].groupby("id")["_shard"].apply(list)
        shown = "; ".join(f"{i!r} in {files}" for i, files in list(where.items())[:10])
        raise IncompleteRatingsError(f"{what}: {dup.nunique()} sample ids appear more than once: {shown}; "
                                     "delete the stale shards and rerun")
    expected, present = set(samples["id"]), set(table["id"])
    missing = [i for i in samples["id"] if i not in present]
    extra = [i for i in table["id"] if i not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} samples missing: {_named(missing)}")
        if extra:
            parts.append(f"{len(extra)} ids not in {samples_path}: {_named(extra)}")
        raise IncompleteRatingsError(f"{what}: " + "; ".join(parts))
    return table.set_index("id").loc[samples["id"]].reset_index().drop(columns="_shard")


def shard_metadata(shard_paths: Sequence[str | Path], keys: Sequence[str], what: str) -> dict[str, Any]:
    """The shards' shared settings (the ``selectit`` schema metadata); shards made with other settings (a stale
    shard from an earlier model or prompt) stop the merge, naming them."""
    seen: dict[str, Any] = {}
    first = None
    for path in shard_paths:
        raw = (pq.read_schema(path).metadata or {}).get(b"selectit")
        meta = json.loads(raw) if raw else {}
        values = {k: meta.get(k) for k in keys}
        if first is None:
            first, seen = str(path), values
        elif values != seen:
            diff = sorted(k for k in keys if values[k] != seen[k])
            raise IncompleteRatingsError(f"{what}: shard {path} was made with other settings than {first} "
                                         f"({', '.join(diff)}); delete the stale shard and rerun")
    return dict(seen)
