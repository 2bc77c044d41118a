"""The torchrun launcher shared by training (data parallel) and rating (tensor parallel)."""

import os
import sys
from pathlib import Path

from selectit.launch import child_env, torchrun_command

REPO = Path(__file__).resolve().parents[1]


def test_torchrun_command_runs_the_module_with_this_interpreter():
    assert torchrun_command(4, "selectit.rating_tp", ["job.json"]) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
        "-m", "selectit.rating_tp", "job.json"]


def test_child_env_puts_this_package_first_and_shares_the_threads():
    env = child_env(0, {"PYTHONPATH": "/elsewhere", "CUDA_VISIBLE_DEVICES": "2,3"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"  # at least one thread per process
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"  # the job's GPUs (Slurm's, or those a local run locked) go along
    assert child_env(3, {})["OMP_NUM_THREADS"] == "3"
