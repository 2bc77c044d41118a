"""The tiny workflow through a real one-node Slurm (munge + slurmctld + slurmd from Debian, fake GPU gres).

The fixture installs and starts the daemons with .ci/slurm.sh and stops them by pid afterwards. Outside CI
the test is skipped when that is impossible (not root, no apt); under CI=true it fails instead."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_helpers import REPO, outputs_digest, snakemake, write_tiny_config

SLURM_SH = REPO / ".ci" / "slurm.sh"


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"real Slurm is required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    if os.geteuid() != 0:
        _unavailable("starting a local Slurm needs root")
    state = tmp_path_factory.mktemp("slurm_state")
    env = {**os.environ, "SLURM_STATE_DIR": str(state)}
    install = subprocess.run(["bash", str(SLURM_SH), "install"], env=env, capture_output=True, text=True)
    if install.returncode != 0:
        _unavailable(f"could not install Slurm: {install.stderr[-2000:]}")
    start = subprocess.run(["bash", str(SLURM_SH), "start"], env=env, capture_output=True, text=True)
    if start.returncode != 0:
        subprocess.run(["bash", str(SLURM_SH), "stop"], env=env)
        pytest.fail(f"local Slurm did not start:\n{start.stdout[-3000:]}\n{start.stderr[-3000:]}")
    exports = subprocess.run(["bash", str(SLURM_SH), "env"], env=env, capture_output=True, text=True).stdout
    for line in exports.splitlines():
        if line.startswith("export SLURM_CONF="):
            env["SLURM_CONF"] = line.partition("=")[2].strip("'\"")
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}:/usr/sbin"
    yield env
    subprocess.run(["bash", str(SLURM_SH), "stop"], env=env, capture_output=True)


def test_rating_jobs_run_through_slurm_with_a_gpu(slurm, completed_run, tmp_path):
    reference, models = completed_run
    workdir = tmp_path / "slurm_run"
    write_tiny_config(workdir, models)
    snakemake(workdir, "--profile", str(REPO / "profiles/slurm"), "--slurm-init-seconds-before-status-checks", "5",
              # the CI node has 2 CPUs and ~20 GB: shrink the cluster-sized requests of profiles/default
              "--set-resources", "rate_shard:cpus_per_gpu=1", "rate_shard:mem_mb=3000", "prepare_model:mem_mb=3000",
              "prepare_data:mem_mb=2000", env=slurm, timeout=1500)
    logs = sorted((workdir / "logs" / "rate_shard").rglob("*.log"))
    assert len(logs) == 8
    job_ids = set()
    for log in logs:
        line = next(l for l in log.read_text().splitlines() if l.startswith("rating stats:"))
        stats = json.loads(line.split(":", 1)[1])
        assert stats["slurm_job_id"], f"{log} did not run under Slurm"
        assert stats["cuda_visible_devices"] in {"0", "1"}, f"{log}: no GPU allocated"
        job_ids.add(stats["slurm_job_id"])
    assert len(job_ids) == 8  # one Slurm job per (model, prompt, shard)
    assert outputs_digest(workdir) == outputs_digest(reference)
