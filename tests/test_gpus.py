"""selectit.gpus: on a local multi-GPU machine each GPU job holds GPUs of its own (CUDA_VISIBLE_DEVICES), waits
while none is free, and gets one back when a job holding it is killed. The GPU count is set with
SELECTIT_LOCAL_GPUS, as this machine has no GPU; locking and the environment are real."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selectit.errors import InputError
from selectit.gpus import LOCAL_GPUS_ENV, pinned_gpus
from tests.workflow_helpers import REPO, snakemake, write_tiny_config

HOLDER = """
import sys, time
from pathlib import Path
from selectit.gpus import pinned_gpus
with pinned_gpus(int(sys.argv[1]), Path(sys.argv[2]), poll_seconds=0.05, log=lambda m: print(m, flush=True)):
    import os
    print("holding", os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
    time.sleep(120)
"""


def _holder(n, lock_dir):
    env = {**os.environ, LOCAL_GPUS_ENV: "2", "PYTHONPATH": str(REPO)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(n), str(lock_dir)], env=env, text=True,
                            stdout=subprocess.PIPE)


def _line_starting(proc, prefix):
    while True:
        line = proc.stdout.readline()
        assert line, f"the holder ended before printing {prefix!r}"
        if line.startswith(prefix):
            return line.split()[-1]


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setenv(LOCAL_GPUS_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


def test_jobs_hold_gpus_of_their_own_and_wait_for_a_freed_one(two_gpus, tmp_path):
    first = _holder(1, tmp_path)
    try:
        assert _line_starting(first, "holding") == "0"
        with pinned_gpus(1, tmp_path, poll_seconds=0.05) as mine:
            assert mine == ["1"] and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
            waiting = _holder(2, tmp_path)  # needs both: waits, holding neither, until both are free
            try:
                assert _line_starting(waiting, "waiting").startswith("/")  # the lock folder it names
                first.send_signal(signal.SIGKILL)  # a killed job's lock goes with it
                first.wait(timeout=30)
                time.sleep(0.3)
                assert waiting.poll() is None  # GPU 1 is still ours
            except BaseException:
                waiting.kill()
                raise
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
        try:
            assert _line_starting(waiting, "holding") == "0,1"
        finally:
            waiting.kill()
            waiting.wait(timeout=30)
    finally:
        first.kill()
        first.wait(timeout=30)


def test_a_job_waiting_for_several_gpus_keeps_none_of_them(two_gpus, tmp_path):
    """All or none: a job that waits for 2 GPUs does not sit on a free one meanwhile (two such jobs would wait on
    each other for ever)."""
    import threading

    jobs = []
    try:
        jobs.append(_holder(1, tmp_path))
        assert _line_starting(jobs[-1], "holding") == "0"
        jobs.append(_holder(2, tmp_path))
        waiting = jobs[-1]
        _line_starting(waiting, "waiting")
        jobs.append(_holder(1, tmp_path))
        got = []
        reader = threading.Thread(target=lambda: got.append(_line_starting(jobs[-1], "holding")), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert got == ["1"]  # GPU 1 was free: the waiting job did not keep it
        for job in jobs[0], jobs[2]:
            job.send_signal(signal.SIGKILL)
        assert _line_starting(waiting, "holding") == "0,1"
    finally:
        for job in jobs:
            job.kill()
            job.wait(timeout=30)


def test_no_pinning_without_gpus_under_slurm_or_with_devices_already_chosen(two_gpus, tmp_path, monkeypatch):
    with pinned_gpus(0, tmp_path) as held:
        assert held is None
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with pinned_gpus(1, tmp_path) as held:
        assert held is None and "CUDA_VISIBLE_DEVICES" not in os.environ
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pinned_gpus(1, tmp_path) as held:
        assert held is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv(LOCAL_GPUS_ENV, "0")
    with pinned_gpus(1, tmp_path) as held:
        assert held is None
    assert not list(tmp_path.iterdir())


def test_a_job_needing_more_gpus_than_the_machine_has_is_an_error(two_gpus, tmp_path):
    with pytest.raises(InputError, match="needs 3 GPUs and the machine has 2"):
        with pinned_gpus(3, tmp_path):
            pass


def test_local_rating_jobs_run_on_gpus_of_their_own(tiny_models, tmp_path):
    workdir = tmp_path / "wf"
    write_tiny_config(workdir, {"tinya": tiny_models["tinya"]})
    env = {LOCAL_GPUS_ENV: "2", "TMPDIR": str(tmp_path)}  # the lock folder under this test's tmp
    snakemake(workdir, "--cores", "2", "--until", "rate_shard", env=env)
    seen = []
    for log in sorted((workdir / "logs/rate_shard").rglob("*.log")):
        stats = [line for line in log.read_text().splitlines() if line.startswith("rating stats:")]
        assert len(stats) == 1, log
        seen.append(json.loads(stats[0].removeprefix("rating stats:"))["cuda_visible_devices"])
    assert len(seen) == 2 * 2 and set(seen) <= {"0", "1"}  # 2 prompts x 2 shards, each pinned to one GPU
    assert (tmp_path / f"selectit-gpu-locks-{os.getuid()}").is_dir()
