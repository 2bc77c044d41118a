"""Run the real Snakefile on a tiny config in a temporary working directory."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
FAULTS = REPO / "tests" / "faults"


def tiny_records(n: int, start: int = 0) -> list[dict]:
    return [{"instruction": f"What is {i} plus {i + 1}?", "input": "", "output": f"It is {2 * i + 1}."}
            for i in range(start, start + n)]


def write_tiny_config(workdir: Path, models: dict[str, Path], records: list[dict] | None = None,
                      prompts: list[str] | None = None, **overrides) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data.json"
    if records is not None or not data.exists():
        data.write_text(json.dumps(records if records is not None else tiny_records(24)))
    config = {
        "datasets": {"tiny": {"path": "data.json", "format": "alpaca", "n_shards": 2}},
        "prompts": prompts or ["Rate the answer from 1 to 5.\n", "Give the response a score between 1 and 5.\n"],
        "n_prompts": 2,
        "score_levels": 5,
        "models": {name: {"hf": str(path)} for name, path in models.items()},
        "rating": {"max_length": 256, "dtype": "fp32", "token_budget": 2048, "threads": 1},
        "scoring": {"variant": "paper", "alpha": 0.2, "model_weights": "param"},
        "selection": {"methods": ["selectit", "random"], "proportions": [0.25], "seed": 0},
    }
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            config[section][sub] = value
        else:
            config[section] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None,
              timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--workflow-profile", str(REPO / "profiles/default"),
           *args]
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **(env or {})}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(workdir: Path, *targets: str) -> dict[str, int]:
    """Jobs per rule that `snakemake -n` would run."""
    out = snakemake(workdir, "-n", *targets).stdout
    counts = {}
    if "Job stats:" not in out:
        return counts
    table = out.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    counts.pop("total", None)
    return counts


def outputs_digest(workdir: Path) -> dict[str, str]:
    files = sorted((workdir / "results" / "scores").rglob("*.parquet")) + sorted(
        (workdir / "results" / "subsets").rglob("*.json"))
    return {str(f.relative_to(workdir)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in files if not f.name.endswith(".manifest.json")}


def fault_env(**settings: str) -> dict[str, str]:
    """Environment that loads the test-only fault hooks (tests/faults/sitecustomize.py) into every Python
    process of a run, with their settings as SELECTIT_TEST_<NAME> variables."""
    pythonpath = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, **{f"SELECTIT_TEST_{k.upper()}": str(v) for k, v in settings.items()}}


def crash_env(at: str, mark: Path, mode: str = "killall") -> dict[str, str]:
    """The first write to a path containing `at` crashes: SIGKILL of the run (killall) or exit 137 (exit137)."""
    return fault_env(crash_at=at, crash_mark=mark, crash_mode=mode)


def run_until_killed(workdir: Path, env: dict[str, str], *args: str, timeout: int = 600) -> int:
    """Run snakemake in its own session (the fault kills that process group) and return its exit status."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--workflow-profile", str(REPO / "profiles/default"), "--cores", "1", *args]
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **env}
    proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
