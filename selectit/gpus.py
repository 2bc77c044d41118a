"""GPUs of a job on a local multi-GPU machine.

Under Slurm each job sees only the GPUs of its allocation. A local Snakemake run gives every job every GPU, and
CUDA code without an explicit device uses the first one, so concurrent jobs would all run on GPU 0. ``pinned_gpus``
gives a local job GPUs of its own: it takes a lock file per GPU (``fcntl.flock``; the kernel releases it when the
job ends, killed or not), waits while none is free, and sets ``CUDA_VISIBLE_DEVICES`` before CUDA starts.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from selectit.errors import InputError

LOCAL_GPUS_ENV = "SELECTIT_LOCAL_GPUS"  # a GPU count that replaces what nvidia-smi reports (tests, odd machines)


def local_gpus() -> list[str]:
    """Indices of this machine's GPUs (nvidia-smi), or of ``SELECTIT_LOCAL_GPUS`` GPUs where that is set."""
    count = os.environ.get(LOCAL_GPUS_ENV)
    if count not in (None, ""):
        return [str(i) for i in range(int(count))]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"selectit-gpu-locks-{os.getuid()}"


@contextmanager
def pinned_gpus(n: int, lock_dir: Path | None = None, poll_seconds: float = 5.0,
                log: Callable[[str], None] = print) -> Iterator[list[str] | None]:
    """Hold ``n`` free GPUs of this machine for the block, with ``CUDA_VISIBLE_DEVICES`` naming them; yields their
    indices. Does nothing (yields None) for a job without GPUs, under Slurm, where ``CUDA_VISIBLE_DEVICES`` is
    already set, or on a machine without GPUs. A job that needs more GPUs than the machine has is an error."""
    if n < 1 or os.environ.get("SLURM_JOB_ID") or os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        yield None
        return
    gpus = local_gpus()
    if not gpus:
        yield None
        return
    if n > len(gpus):
        raise InputError(f"this job needs {n} GPUs and the machine has {len(gpus)}")
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    held: list[tuple[str, object]] = []
    start, said = time.monotonic(), None
    while True:
        for gpu in gpus:
            if len(held) == n:
                break
            handle = open(lock_dir / f"gpu{gpu}.lock", "a")  # noqa: SIM115 -- open while the lock is held
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held.append((gpu, handle))
            except BlockingIOError:
                handle.close()
        if len(held) == n:
            break
        for _, handle in held:  # all or none: two multi-GPU jobs holding some each would wait for ever
            handle.close()
        held = []
        if said is None or time.monotonic() - said >= 60:
            log(f"waiting for {n} free GPU(s) of {len(gpus)} (held by other jobs; locks in {lock_dir})")
            said = time.monotonic()
        time.sleep(poll_seconds)
    names = [gpu for gpu, _ in held]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(names)
    log(f"pinned to GPU(s) {','.join(names)} after {time.monotonic() - start:.0f} s")
    try:
        yield names
    finally:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        for _, handle in held:
            handle.close()
