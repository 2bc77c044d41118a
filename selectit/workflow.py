"""DAG-time helpers for the Snakefile (rules/common.smk): what the config asks for, as names and
hashes, computed without running any job. Kept here so they are unit-tested."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from selectit.atomic import sha256_file
from selectit.audit import source_path
from selectit.data import load_dataset_table, shard_names, shard_of
from selectit.prompts import MISSING_PROMPT, RatingPrompt, load_prompts, select_prompts
from selectit.schema import default


def rating_prompts(config: dict[str, Any]) -> list:
    """The K rating prompts. A prompt file that is not there yet (the paper config's released prompts,
    fetched once by the user) gives placeholders so that a dry run still shows the whole DAG; a real
    rating job with a placeholder stops with what to do."""
    source = config["prompts"]
    if isinstance(source, str) and not Path(source).exists():
        return [RatingPrompt(text=f"{MISSING_PROMPT}{source}#{i}", position=i)
                for i in range(1, int(config.get("n_prompts") or default("n_prompts")) + 1)]
    return select_prompts(load_prompts(source), config.get("n_prompts"))


@lru_cache(maxsize=16)
def _shard_hashes(spec_json: str, n_shards: int) -> dict[str, str]:
    spec = json.loads(spec_json)
    path = source_path(spec)
    if path and Path(path).is_file():
        table, _ = load_dataset_table(spec)
        numbers = shard_of(table["id"], n_shards)
        out = {}
        for i, name in enumerate(shard_names(n_shards)):
            ids = sorted(table["id"][numbers == i])
            out[name] = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        return out
    # Hub datasets (or a dry run without the data): membership is pinned by name + revision.
    tag = f"{spec.get('hf_name') or spec.get('path')}@{spec.get('revision')}"
    if spec.get("canaries_of"):  # an audit of a Hub dataset: pinned by its source and the audit settings
        tag = hashlib.sha256(spec_json.encode()).hexdigest()[:16]
    return {name: f"unread:{tag}" for name in shard_names(n_shards)}


def shard_hashes(dataset_spec: dict[str, Any]) -> dict[str, str]:
    """Hash of each shard's sample ids, read from the source file at DAG time, so a rating job reruns
    exactly when its shard's membership changes (and not when other records are added)."""
    return _shard_hashes(json.dumps(dataset_spec, sort_keys=True), int(dataset_spec["n_shards"]))


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (cached per size and mtime within one Snakemake invocation)."""
    st = Path(path).stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)
