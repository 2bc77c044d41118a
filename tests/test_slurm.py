"""The tiny workflow through a real one-node Slurm (munge + slurmctld + slurmd from Debian, fake GPU gres).

The fixture installs and starts the daemons with .ci/slurm.sh and stops them by pid afterwards. Outside CI
the test is skipped when that is impossible (not root, no apt); under CI=true it fails instead."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_helpers import REPO, crash_env, fault_env, outputs_digest, snakemake, write_tiny_config

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


def submitted_resources(log: str, rule: str, resource: str) -> list[str]:
    """The values of `resource` in the job blocks of `rule` that Snakemake printed, in order. A block starts with
    `rule <name>:` alone at the start of a line and holds indented `key: value` lines; an "Error in rule <name>:"
    report is not a block, and a value is never taken from a later block of another rule."""
    values = []
    for block in re.finditer(rf"^rule {rule}:\n((?:[ \t]+\S[^\n]*\n?)+)", log, flags=re.M):
        found = re.search(rf"^[ \t]+resources:[^\n]*?\b{resource}=(\d+)", block[1], flags=re.M)
        assert found, f"a {rule} job block without {resource}:\n{block[0]}"
        values.append(found[1])
    return values


def resubmitted_resource(log: str, rule: str, resource: str, tmp_path: Path) -> tuple[set[str], str]:
    """From Snakemake's output of a run in which exactly one job was resubmitted: the values of `resource` in
    the submissions of `rule` before the resubmission, and its value in the resubmission. (The output also
    holds the failed job's own log, so only the main process's "Trying to restart job" line splits it.)"""
    (tmp_path / "snakemake_output.txt").write_text(log)  # kept for a failing assertion's reader
    first, restarts, after = log.partition("Trying to restart job")
    assert restarts and "Trying to restart job" not in after, "exactly one job should be resubmitted"
    retried = submitted_resources(after, rule, resource)
    assert retried, f"no {rule} job block after the restart"
    return set(submitted_resources(first, rule, resource)), retried[0]


def test_resources_are_read_from_job_blocks_only():
    """The CI failure of stop 22: an "Error in rule rate_shard:" report followed by another rule's block made the
    old pattern read that rule's mem_mb (1000) as a rate_shard submission's."""
    block = ("{kind} {rule}:\n    input: data.json\n    wildcards: shard=shard00{n}\n"
             "    resources: tmpdir=<TBD>, disk_mb=1000, mem_mb={mem}, mem=1 GB, gpu=1\nShell command: None\n\n")
    log = (block.format(kind="rule", rule="rate_shard", n=0, mem=1500)
           + "Error in rule rate_shard:\n    message: SLURM-job '5' failed\n    jobid: 5\n"
           + block.format(kind="checkpoint", rule="select_subset", n=1, mem=1000)
           + "[Wed Dec  2 20:04:07 2026]\n" + block.format(kind="rule", rule="rate_shard", n=1, mem=1500)
           + "Trying to restart job 5.\n\n" + block.format(kind="rule", rule="rate_shard", n=0, mem=3000)
           + block.format(kind="rule", rule="merge_ratings", n=0, mem=1000))
    assert submitted_resources(log, "rate_shard", "mem_mb") == ["1500", "1500", "3000"]
    first, _, after = log.partition("Trying to restart job")
    assert submitted_resources(first, "select_subset", "mem_mb") == []  # a checkpoint's block is not a rule's
    assert submitted_resources(log, "merge_ratings", "disk_mb") == ["1000"]


def test_rating_jobs_run_through_slurm_with_a_gpu(slurm, completed_run, tmp_path):
    """Every rating job is its own Slurm job with a GPU; one of them dies as if out of memory (exit 137, by the
    fault injection of tests/faults) and is resubmitted with twice the memory; the outputs equal a local run's."""
    reference, models = completed_run
    workdir = tmp_path / "slurm_run"
    write_tiny_config(workdir, models)
    mark = tmp_path / "oom_killed"
    env = {**slurm, **crash_env("results/ratings/tiny/tinya/", mark, mode="exit137")}
    proc = snakemake(workdir, "--profile", str(REPO / "profiles/slurm"), "--slurm-init-seconds-before-status-checks",
                     "5",
                     # the CI node has 2 CPUs and ~20 GB: shrink the cluster-sized requests of profiles/default,
                     # keeping their growth with the attempt
                     "--set-resources", "rate_shard:cpus_per_gpu=1", "rate_shard:mem_mb=1500*attempt",
                     "prepare_model:mem_mb=3000", "prepare_data:mem_mb=2000", env=env, timeout=1500)
    assert mark.exists(), "the injected out-of-memory exit never happened"
    log = proc.stdout + proc.stderr
    first, retry = resubmitted_resource(log, "rate_shard", "mem_mb", tmp_path)
    assert first == {"1500"} and retry == "3000"  # resubmitted once, with twice the memory
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


def test_training_over_its_time_limit_resumes_on_the_next_attempt(slurm, completed_run, tiny_models, tmp_path):
    """A training job that overruns its Slurm time limit (1 minute on the first attempt; its steps are slowed by
    tests/faults) is killed by Slurm (TIMEOUT) and resubmitted by Snakemake; the new job resumes from the last
    checkpoint the killed one completed and finishes the run."""
    import shutil

    source, models = completed_run
    workdir = tmp_path / "slurm_train"
    shutil.copytree(source, workdir, symlinks=True)  # selection done; only training is left
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    max_steps = 60
    training = {"bases": {"tinyc": {"hf": str(tiny_models["tinyc"])}}, "methods": ["selectit"], "proportions": [0.25],
                "seeds": [0], "nproc": 1, "threads": 1,
                "settings": {"max_steps": max_steps, "save_steps": 5, "global_batch_size": 2,
                             "per_device_batch_size": 2, "max_length": 96, "gradient_checkpointing": False,
                             "logging_steps": 5}}
    # the config is checked whole when parsed (a training base makes its evaluations' data and judge required)
    write_tiny_config(workdir, models, training=training,
                      evaluation={"benchmarks": ["gsm"], "data_dir": str(REPO / "data/default/eval")})
    mark = tmp_path / "slowed"
    env = {**slurm, **fault_env(slow_step=2, slow_mark=mark)}
    proc = snakemake(workdir, "train_all", "--profile", str(REPO / "profiles/slurm"),
                     "--slurm-init-seconds-before-status-checks", "5",
                     "--set-resources", "train_subset:runtime=1 if attempt == 1 else 20", "train_subset:mem_mb=3000",
                     "train_subset:cpus_per_gpu=1", "prepare_model:mem_mb=3000", env=env, timeout=1500)
    assert mark.exists(), "the slowed training never started"
    log = proc.stdout + proc.stderr
    first, retry = resubmitted_resource(log, "train_subset", "runtime", tmp_path)
    assert first == {"1"} and retry == "20"  # a 1-minute limit, then resubmitted with the second attempt's
    job_ids = sorted(set(re.findall(r"SLURM jobid (\d+)", log)))
    states = [subprocess.run(["scontrol", "show", "job", j], env=slurm, capture_output=True, text=True).stdout
              for j in job_ids]
    assert sum("JobState=TIMEOUT" in s for s in states) == 1, [re.findall(r"JobState=\S+", s) for s in states]
    result = json.loads((workdir / "results/train/tinyc/tiny/selectit/0.25/seed0/train_result.json").read_text())
    assert result["global_step"] == max_steps
    assert result["resumed_from_step"] and 0 < result["resumed_from_step"] < max_steps
    assert result["resumed_from_step"] % 5 == 0


def test_make_slurm_profile_then_snakemake_profile_slurm_as_users_type_it(slurm, tiny_models, tmp_path):
    """A cluster user's first run: `make slurm-profile` once (partition from this Slurm's sinfo; no account, as it
    has no accounting), then `snakemake --profile slurm` from the workflow folder finds the installed profile in
    the (temporary) HOME and runs a job through Slurm in that partition."""
    import yaml

    home = tmp_path / "home"
    env = {**slurm, "HOME": str(home), "XDG_CONFIG_HOME": ""}
    proc = subprocess.run([shutil.which("make"), "-s", "-C", str(REPO), "slurm-profile"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    profile = yaml.safe_load((home / ".config/snakemake/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["default-resources"] == {"slurm_partition": "'debug'"}

    workdir = tmp_path / "wf"
    write_tiny_config(workdir, {"tinya": tiny_models["tinya"]})
    proc = snakemake(workdir, "--profile", "slurm", "results/data/tiny/report.json",
                     "--slurm-init-seconds-before-status-checks", "5", "--set-resources", "prepare_data:mem_mb=2000",
                     env={"HOME": str(home), "XDG_CONFIG_HOME": "", **{k: slurm[k] for k in ("PATH", "SLURM_CONF")}},
                     timeout=600)
    log = proc.stdout + proc.stderr
    job_ids = re.findall(r"SLURM jobid (\d+)", log)
    assert len(job_ids) == 1, log[-3000:]
    job = subprocess.run(["scontrol", "show", "job", job_ids[0]], env=slurm, capture_output=True, text=True).stdout
    assert "Partition=debug" in job and "JobState=COMPLETED" in job, job
    assert json.loads((workdir / "results/data/tiny/report.json").read_text())["counts"]["kept"] == 24



def test_a_tensor_parallel_rating_job_runs_its_processes_in_one_allocation(slurm, completed_run, tmp_path):
    """A rater with `gpus: 2` (a Llama, which has a tensor-parallel plan): its rating job is one Slurm job with one
    task and both fake GPUs; the job starts 2 tensor-parallel processes inside that allocation, both seeing its
    GPUs, and the shard equals the local unsplit run's (fp32 logits within 1e-4)."""
    import numpy as np
    import pyarrow.parquet as pq
    import yaml

    reference, models = completed_run
    expected = sorted((reference / "results/ratings/tiny/tinya").glob("*/*.parquet"))[0]
    target = str(expected.relative_to(reference))
    workdir = tmp_path / "slurm_tp"
    config_path = write_tiny_config(workdir, models)
    config = yaml.safe_load(config_path.read_text())
    config["models"]["tinya"]["gpus"] = 2
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workdir, target, "--profile", str(REPO / "profiles/slurm"),
                     "--slurm-init-seconds-before-status-checks", "5",
                     "--set-resources", "rate_shard:cpus_per_gpu=1", "rate_shard:mem_mb=4000",
                     "prepare_model:mem_mb=3000", "prepare_data:mem_mb=2000", env=slurm, timeout=1500)
    log = proc.stdout + proc.stderr
    (tmp_path / "snakemake_output.txt").write_text(log)
    rating_log = next((workdir / "logs/rate_shard").rglob("*.log")).read_text()
    stats = json.loads(next(l for l in rating_log.splitlines() if l.startswith("rating stats:")).split(":", 1)[1])
    assert stats["parallel"] == {"mode": "tensor", "gpus": 2, "processes": 2}, rating_log[-3000:]
    assert [p["rank"] for p in stats["processes"]] == [0, 1] and len({p["pid"] for p in stats["processes"]}) == 2
    assert {p["cuda_visible_devices"] for p in stats["processes"]} == {"0,1"}  # the allocation's two GPUs
    job = subprocess.run(["scontrol", "show", "job", stats["slurm_job_id"]], env=slurm, capture_output=True,
                         text=True).stdout
    assert "NumTasks=1 " in job and "TresPerJob=gres:gpu:2" in job, job  # one task of it launched both processes
    got, ref = pq.read_table(workdir / target), pq.read_table(expected)
    assert got.column("id").to_pylist() == ref.column("id").to_pylist()
    assert got.column("n_tokens").to_pylist() == ref.column("n_tokens").to_pylist()
    np.testing.assert_allclose(np.stack(got.column("logits").to_pylist()), np.stack(ref.column("logits").to_pylist()),
                               atol=1e-4, rtol=0)
    assert json.loads(got.schema.metadata[b"selectit"])["parallel"]["mode"] == "tensor"
