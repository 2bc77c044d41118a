"""Atomic file writes: every output is written under a temporary name in its own folder and renamed when
complete (``os.replace``), so a file under its final name is always complete, and a failed write leaves no
temporary file behind (a killed process leaves ``.<name>.<pid>.partial``, which is never read)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks (the one file-hashing helper of the package)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new, empty temporary folder beside ``path``; on success it replaces ``path`` (an old folder there
    is removed first), on an exception it is removed. A killed process leaves ``.<name>.<pid>.partial``, which
    no later run reuses."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any, indent: int = 2, allow_nan: bool = True) -> None:
    """JSON (UTF-8, not ASCII-escaped) with a final newline."""
    write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=allow_nan) + "\n")


def write_parquet_atomic(table: Any, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write under a temporary name and rename, so the file is either complete or absent."""
    import pyarrow.parquet as pq

    if metadata:
        table = table.replace_schema_metadata({"selectit": json.dumps(metadata, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
