"""The machine a model job runs on: the CPU threads it may use (Slurm, cgroup quota, affinity), OpenMP and glibc
malloc set up before torch loads, and the device's out-of-memory signal and cache. Every model job (rating, IFD,
the judge, embeddings, training, evaluation) sets itself up through ``prepare_cpu_threads``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a device running out of memory (CUDA's error, or its message on other backends)."""
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def empty_cache() -> None:
    """Give the CUDA caching allocator's free blocks back (after an out-of-memory error); nothing on a CPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup", proc_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """CPUs the cgroup quota of this process allows (quota / period; cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), the least over the process's cgroup and the root of the mount (a
    container sees its own cgroup there); None where there is no quota."""
    root = Path(root)
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        lines = []
    v2_paths, v1_paths = [""], [""]
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_paths.append(parts[2].strip("/"))
        elif "cpu" in parts[1].split(","):
            v1_paths.append(parts[2].strip("/"))
    quotas = []
    for rel in v2_paths:
        try:
            fields = (root / rel / "cpu.max").read_text().split()
        except OSError:
            continue
        if len(fields) == 2 and fields[0] != "max" and int(fields[1]) > 0:
            quotas.append(int(fields[0]) / int(fields[1]))
    for rel in v1_paths:
        for base in (root / "cpu" / rel, root / "cpu,cpuacct" / rel):
            try:
                quota = int((base / "cpu.cfs_quota_us").read_text())
                period = int((base / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                quotas.append(quota / period)
    return min(quotas) if quotas else None


def slurm_cpus(environ: Any) -> int | None:
    """CPUs Slurm gave this task: SLURM_CPUS_PER_TASK, else SLURM_CPUS_PER_GPU x the GPUs on the node (1 if unset)."""
    def number(name: str) -> int | None:
        value = str(environ.get(name, "")).split("(")[0].strip()  # e.g. "4(x2)" in some Slurm variables
        return int(value) if value.isdigit() and int(value) > 0 else None

    per_task = number("SLURM_CPUS_PER_TASK")
    if per_task:
        return per_task
    per_gpu = number("SLURM_CPUS_PER_GPU")
    if per_gpu:
        gpus = number("SLURM_GPUS_ON_NODE") or number("SLURM_GPUS_PER_TASK") or 1
        return per_gpu * gpus
    return None


def affinity_mask() -> list[int]:
    """The CPUs of this process's affinity mask, sorted (``os.sched_getaffinity``: what ``taskset``, Slurm's cgroup
    cpuset or a container allows); every CPU of the machine where the platform has no affinity mask."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def job_cpus(requested: int | None = None, *, environ: Any = None, affinity: set[int] | None = None,
             quota: float | None | str = "read") -> tuple[int, dict[str, Any]]:
    """The CPU threads a job may use: the least of the threads it asked for (the rule's ``threads``), the CPUs
    Slurm gave the task (``slurm_cpus``), the cgroup CPU quota rounded down (at least 1) and the CPUs of this
    process's affinity mask (``affinity_mask``). Returns (threads, the limits seen). ``environ``, ``affinity`` and
    ``quota`` are read from the process unless given (tests)."""
    environ = os.environ if environ is None else environ
    if affinity is None:
        affinity = set(affinity_mask())
    if quota == "read":
        quota = cgroup_cpu_quota()
    limits: dict[str, Any] = {"requested": int(requested) if requested else None, "slurm": slurm_cpus(environ),
                              "cgroup_quota": round(quota, 3) if quota else None, "affinity": len(affinity)}
    bounds = [v for v in (limits["requested"], limits["slurm"], len(affinity)) if v]
    if quota:
        bounds.append(max(1, int(quota + 1e-9)))
    return max(1, min(bounds)), limits


# glibc malloc settings for a rating process (mallopt's parameter number, value): serve every buffer under 32 MiB
# (glibc's largest mmap threshold) from the heap, and keep up to 1 GiB of freed heap instead of returning it to the
# kernel, with 64 MiB of headroom on each growth. With glibc's adaptive defaults, the activations a batch frees are
# trimmed and the next batch faults them back in as fresh zeroed pages (SmolLM2 in bf16: about 1M minor faults on
# 130 rows × one prompt; 50k with these; docs/performance.md). The trim threshold must go with the mmap one: set
# alone, it turns off the adaptive mmap threshold and the faults rise.
MALLOC_SETTINGS = {"mmap_threshold": (-3, 32 << 20), "trim_threshold": (-1, 1 << 30), "top_pad": (-2, 64 << 20)}
# environment variables by which a user sets glibc malloc; where one is set, tune_malloc leaves malloc alone
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX",
              "GLIBC_TUNABLES", "LD_PRELOAD")


def tune_malloc(environ: Any = None) -> dict[str, Any]:
    """Apply ``MALLOC_SETTINGS`` to this process's glibc malloc (any time; it is process-wide and affects
    allocations from then on). Skipped, with the reason, where the C library is not glibc, where
    ``SELECTIT_TUNE_MALLOC=0``, or where the user set malloc up already (``MALLOC_ENV``: glibc's own variables, or
    a preloaded allocator such as jemalloc or tcmalloc). Returns {"applied": bool, "settings" or "skipped": ...}."""
    import ctypes
    import platform

    environ = os.environ if environ is None else environ
    if str(environ.get("SELECTIT_TUNE_MALLOC", "1")).strip() == "0":
        return {"applied": False, "skipped": "SELECTIT_TUNE_MALLOC=0"}
    if any(environ.get(name) for name in MALLOC_ENV):
        return {"applied": False, "skipped": "set by the environment: " +
                ", ".join(name for name in MALLOC_ENV if environ.get(name))}
    if platform.libc_ver()[0] != "glibc":
        return {"applied": False, "skipped": f"C library is not glibc ({platform.libc_ver()[0] or 'unknown'})"}
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as exc:
        return {"applied": False, "skipped": f"mallopt not found: {exc}"}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    failed = [name for name, (param, value) in MALLOC_SETTINGS.items() if mallopt(param, value) != 1]
    if failed:
        return {"applied": False, "skipped": "mallopt refused " + ", ".join(failed)}
    return {"applied": True, "settings": {name: value for name, (_, value) in MALLOC_SETTINGS.items()}}


def prepare_cpu_threads(requested: int | None = None, **probe: Any) -> dict[str, Any]:
    """Before torch is imported: limit OpenMP/MKL to ``job_cpus`` threads and make idle OpenMP threads sleep
    (``OMP_WAIT_POLICY=PASSIVE``, unless set already) instead of spinning, so a rating job beside other busy
    processes neither takes more cores than it was given nor burns them while it waits. Both are read by the OpenMP
    runtime once, when torch loads it; if torch is imported already only ``torch.set_num_threads`` still applies
    (``omp_env_applied`` says which). Also sets torch's thread count where torch is loaded, and glibc malloc's
    settings (``tune_malloc``; ``malloc`` says whether they applied). Returns what it did."""
    import sys

    threads, limits = job_cpus(requested, **probe)
    applied = "torch" not in sys.modules
    if applied:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            current = os.environ.get(name, "")
            if not (current.isdigit() and 0 < int(current) <= threads):
                os.environ[name] = str(threads)
    malloc = tune_malloc()
    import torch

    torch.set_num_threads(threads)
    return {"threads": threads, "cpu_limits": limits, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "omp_env_applied": applied, "malloc": malloc}


def job_memory_bytes(environ: Any = None, meminfo: str | Path = "/proc/meminfo",
                     cgroup_root: str | Path = "/sys/fs/cgroup") -> tuple[int | None, dict[str, Any]]:
    """The memory a job may still take: the least of the machine's available memory (``MemAvailable``), what its
    cgroup (v2 ``memory.max`` less ``memory.current``) and Slurm (``SLURM_MEM_PER_NODE``, MiB) allow. Returns
    (bytes or None where nothing could be read, the limits seen)."""
    environ = os.environ if environ is None else environ
    limits: dict[str, Any] = {}
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits["available"] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        cap = (Path(cgroup_root) / "memory.max").read_text().strip()
        if cap.isdigit():
            used = int((Path(cgroup_root) / "memory.current").read_text().strip() or 0)
            limits["cgroup"] = max(0, int(cap) - used)
    except (OSError, ValueError):
        pass
    slurm = str(environ.get("SLURM_MEM_PER_NODE", "")).strip()
    if slurm.isdigit() and int(slurm) > 0:
        limits["slurm"] = int(slurm) << 20
    return (min(limits.values()) if limits else None), limits
