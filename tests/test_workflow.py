"""The Snakemake workflow on a tiny config: a complete run, partial reruns after config edits, and a
SIGKILL mid-rating that reruns to byte-identical scores and subsets."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, SNAKEMAKE, job_counts, outputs_digest, snakemake, tiny_records, write_tiny_config


def test_complete_run_outputs(completed_run):
    import json

    workdir, _ = completed_run
    subset = json.loads((workdir / "results/subsets/tiny/selectit/0.25.json").read_text())
    assert len(subset) == 6  # int(24 * 0.25)
    manifest = json.loads((workdir / "results/subsets/tiny/selectit/0.25.manifest.json").read_text())
    assert manifest["selected_ids"] == [r["id"] for r in subset]
    assert set(manifest["model_fingerprints"]) == {"tinya", "tinyb"}
    assert len(manifest["prompt_ids"]) == 2 and manifest["dataset_fingerprint"]
    assert job_counts(workdir) == {}  # nothing left to do


def test_scoring_edits_rerun_no_rating(completed_run):
    workdir, models = completed_run
    for edit in ({"scoring__alpha": 0.6}, {"scoring__variant": "released"},
                 {"scoring__model_weights": {"tinya": 0.3, "tinyb": 0.7}},
                 {"selection__proportions": [0.5]}):
        write_tiny_config(workdir, models, **edit)
        counts = job_counts(workdir)
        assert counts.get("rate_shard", 0) == 0, (edit, counts)
        assert counts.get("select_subset", 0) >= 1, (edit, counts)
    write_tiny_config(workdir, models)
    assert job_counts(workdir) == {}


def test_prompt_edit_reruns_only_that_prompt(completed_run):
    workdir, models = completed_run
    write_tiny_config(workdir, models, prompts=["Rate the answer from 1 to 5.\n", "Score it 1-5, digits only.\n"])
    counts = job_counts(workdir)
    assert counts["rate_shard"] == 2 * 2  # that prompt: its 2 shards x 2 models
    assert "prepare_model" not in counts and "prepare_data" not in counts
    write_tiny_config(workdir, models)


def test_model_added_rates_only_that_model(completed_run, tiny_models):
    workdir, models = completed_run
    write_tiny_config(workdir, {**models, "tinyc": tiny_models["tinyc"]})
    counts = job_counts(workdir)
    assert counts["prepare_model"] == 1
    assert counts["rate_shard"] == 2 * 2  # tinyc: 2 prompts x 2 shards
    write_tiny_config(workdir, models)


def test_a_raters_gpus_sets_its_jobs_gpu_resource_and_reruns_nothing(completed_run):
    workdir, models = completed_run
    path = write_tiny_config(workdir, models)
    config = yaml.safe_load(path.read_text())
    config["models"]["tinya"]["gpus"] = 2
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert job_counts(workdir) == {}  # how many GPUs a job gets changes no output
    out = snakemake(workdir, "-n", "--forcerun", "rate_shard").stdout
    jobs = [block for block in out.split("\nrule ")[1:] if block.startswith("rate_shard:")]
    gpus = {}
    for block in jobs:
        model = re.search(r"model=(\w+)", block)[1]
        gpus.setdefault(model, set()).add(int(re.search(r"\bgpu=(\d+)", block)[1]))
    assert gpus == {"tinya": {2}, "tinyb": {1}} and len(jobs) == 2 * 2 * 2
    write_tiny_config(workdir, models)


def test_records_added_rerate_only_changed_shards(completed_run):
    from selectit.data import normalise, shard_of

    workdir, models = completed_run
    extra = tiny_records(1, start=100)
    write_tiny_config(workdir, models, records=extra + tiny_records(24))  # inserted first: every index shifts
    counts = job_counts(workdir)
    table, _ = normalise(extra, "x")
    assert counts["rate_shard"] == 2 * 2  # one shard changed membership: x 2 prompts x 2 models
    assert int(shard_of(table["id"], 2)[0]) in (0, 1)
    write_tiny_config(workdir, models, records=tiny_records(24))
    assert job_counts(workdir).get("rate_shard", 0) == 0


def test_sigkill_mid_rating_reruns_identically(completed_run, tmp_path):
    reference, models = completed_run
    workdir = tmp_path / "killed"
    write_tiny_config(workdir, models)
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--workflow-profile", str(REPO / "profiles/default"), "--cores", "1"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ratings = workdir / "results" / "ratings"
    deadline = time.time() + 600
    while time.time() < deadline and len(list(ratings.rglob("*.parquet"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # snakemake and the rating job it runs
    proc.wait()
    n_done = len(list(ratings.rglob("*.parquet")))
    assert 3 <= n_done < 8, "the kill should land mid-rating"
    import pyarrow.parquet as pq

    for f in ratings.rglob("*.parquet"):  # every file under its final name is complete
        assert pq.read_table(f).num_rows == pq.read_table(reference / f.relative_to(workdir)).num_rows
    snakemake(workdir, "--unlock")  # a SIGKILLed snakemake leaves its lock; README: rerun after --unlock
    snakemake(workdir, "--cores", "2")
    assert outputs_digest(workdir) == outputs_digest(reference)
