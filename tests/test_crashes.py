"""A crash at the worst moment loses nothing and misaligns nothing.

Fault injection (tests/faults/sitecustomize.py) SIGKILLs Snakemake and its running job just before the job moves
its finished output into place: the merge of one model's ratings, the fusion of all models, a subset's manifest
(the file that marks a subset complete). After `--unlock` the rerun must finish with outputs byte-identical to an
uninterrupted run. (Rating is covered by tests/test_workflow.py, training by tests/test_training.py, evaluation by
tests/test_train_eval_workflow.py.)"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from tests.workflow_helpers import crash_env, outputs_digest, run_until_killed, snakemake


def copy_rated_run(source: Path, dest: Path) -> Path:
    """A copy of a finished run with everything after rating removed: the state of a first run that has rated."""
    shutil.copytree(source, dest, symlinks=True)  # with .snakemake: the metadata says rating is done
    shutil.rmtree(dest / ".snakemake" / "locks", ignore_errors=True)
    for stage in ("scores", "subsets"):
        shutil.rmtree(dest / "results" / stage)
    return dest


@pytest.mark.parametrize("stage, at", [
    ("merge", "results/scores/tiny/tinya/logits.parquet"),
    ("fusion", "results/scores/tiny/selectit.parquet"),
    ("selection", "results/subsets/tiny/selectit/0.25.manifest.json"),
])
def test_sigkill_at_the_final_write_reruns_identically(completed_run, tmp_path, stage, at):
    reference, _ = completed_run
    workdir = copy_rated_run(reference, tmp_path / stage)
    mark = tmp_path / "crashed"
    status = run_until_killed(workdir, crash_env(at, mark))
    assert mark.exists(), f"the fault at {at} was never reached (snakemake exit {status})"
    assert status == -signal.SIGKILL
    target = workdir / at
    assert not target.exists(), "the output must not appear under its final name"
    assert list(target.parent.glob(f".{target.name}.*")), "the finished temp file is left beside it, unused"
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2")
    assert outputs_digest(workdir) == outputs_digest(reference)
    assert snakemake(workdir, "-n").stdout.count("Nothing to be done") == 1
