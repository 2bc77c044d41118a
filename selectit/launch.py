"""Launching a job's work as several local processes with torchrun (training's data parallelism, rating's tensor
parallelism), and the environment those processes read.

A job runs ``python -m torch.distributed.run --standalone --nproc_per_node N -m <module> ...`` (the job's own
interpreter, so the venv's; ``--standalone`` picks a free local port, so several such jobs share a machine). The
processes inherit the job's ``CUDA_VISIBLE_DEVICES``: under Slurm the GPUs of its one allocation, in a local run
the GPUs ``selectit.gpus.pinned_gpus`` locked for it; process ``LOCAL_RANK`` binds to the ``LOCAL_RANK``-th of them.
Under Slurm a job with N GPUs is one task (``tasks_per_gpu: 0`` in profiles/default, plugin issue #316), so the N
processes are torchrun's children inside that task, not N Slurm tasks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def world_size_from_env() -> int:
    """Number of processes of this run (``WORLD_SIZE`` set by torchrun; 1 for a plain process)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (``RANK`` set by torchrun; 0 for a plain process)."""
    return int(os.environ.get("RANK", "0"))


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ


def torchrun_command(n_procs: int, module: str, args: Sequence[str] = ()) -> list[str]:
    """Command line that runs ``python -m <module> <args>`` as ``n_procs`` torchrun processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n_procs),
            "-m", module, *args]


def child_env(threads_per_process: int, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of launched processes: this one's, with the folder holding this ``selectit`` first on
    ``PYTHONPATH`` (the children import the same package) and OpenMP/MKL limited to ``threads_per_process`` each
    (more threads than cores in all is far slower)."""
    environ = os.environ if environ is None else environ
    package_root = str(Path(__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [package_root, environ.get("PYTHONPATH")]))
    threads = str(max(1, int(threads_per_process)))
    return {**environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
            "TOKENIZERS_PARALLELISM": "false"}


def run_launched(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run a launch command, its output going where this process's goes (a job's log); returns its exit status."""
    try:
        out = sys.stdout.fileno()
        sys.stdout.flush()
    except (AttributeError, OSError, ValueError):  # a stream without a file (captured output)
        out = None
    return subprocess.run(list(cmd), stdout=out, stderr=subprocess.STDOUT if out is not None else None,
                          env=dict(env), check=False).returncode
