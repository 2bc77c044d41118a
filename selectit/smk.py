"""Glue for the thin scripts under scripts/: log to the rule's log file, pin a GPU job of a local run to GPUs of its
own (selectit.gpus), turn SelectITErrors into one clear message (no traceback) and a non-zero exit."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from selectit.errors import SelectITError
from selectit.gpus import pinned_gpus


@contextlib.contextmanager
def step(snakemake: Any) -> Iterator[None]:
    log = open(snakemake.log[0], "w", buffering=1) if snakemake.log else None
    old_out, old_err = sys.stdout, sys.stderr
    if log:
        sys.stdout = sys.stderr = log
    try:
        with pinned_gpus(int(getattr(snakemake.resources, "gpu", 0) or 0)):
            yield
    except SelectITError as exc:
        msg = f"error in rule {snakemake.rule}: {exc}"
        if log:
            print(msg, file=log)
        print(msg, file=old_err)
        sys.stdout, sys.stderr = old_out, old_err
        sys.exit(2)
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        if log:
            log.close()
