"""Training and evaluation in the Snakemake workflow on a tiny config: a finished selection (a copy of the
session's `completed_run`) is trained on with a tiny base model and evaluated on every benchmark whose
module is present; a finished run has nothing left to do, and edits rerun only what they change."""

from __future__ import annotations

import importlib
import json
import shutil
import time

import pytest

from selectit.evaluation import BENCHMARKS
from tests.workflow_helpers import REPO, job_counts, snakemake, write_tiny_config

RUN = "tinyc/tiny/selectit/0.25/seed0"
TRAINING_SETTINGS = {"epochs": 1, "global_batch_size": 2, "per_device_batch_size": 2, "max_length": 96,
                     "gradient_checkpointing": False, "logging_steps": 1}
EVAL_SETTINGS = {
    "mmlu": {"limit": 1, "n_shot": 1},
    "gsm": {"limit": 2, "n_shot": 1, "max_new_tokens": 8},
    "bbh": {"limit": 1, "n_shot": 1, "max_new_tokens": 8},
    "tydiqa": {"limit": 1, "max_new_tokens": 8},
    "codex": {"limit": 2, "n_samples": 2, "ks": [1], "value_k": 1, "max_new_tokens": 16, "workers": 2},
    "alpaca_eval": {"limit": 2, "max_new_tokens": 8, "judge": {"type": "hf", "model_dir": "results/models/tinya"}},
}


def present_benchmarks() -> list[str]:
    """Benchmarks whose module exists (mmlu/gsm/bbh may still be missing while they are written)."""
    names = []
    for name, entry in BENCHMARKS.items():
        try:
            importlib.import_module(entry.module)
        except ModuleNotFoundError as exc:
            if exc.name == entry.module:
                continue
            raise
        names.append(name)
    return names


BENCHES = present_benchmarks()


def train_eval_config(workdir, models, base_path, methods=("selectit",), base_settings=None, **edits):
    base = {"hf": str(base_path), **({"settings": base_settings} if base_settings is not None else {})}
    training = {"bases": {"tinyc": base}, "methods": list(methods), "proportions": [0.25],
                "seeds": [0], "nproc": 1, "threads": 1, "settings": {**TRAINING_SETTINGS, **edits.pop("training", {})}}
    settings = {b: {**EVAL_SETTINGS[b], **edits.pop(b, {})} for b in BENCHES}
    evaluation = {"benchmarks": BENCHES, "data_dir": str(REPO / "data/default/eval"), "threads": 1,
                  "settings": settings}
    assert not edits
    return write_tiny_config(workdir, models, training=training, evaluation=evaluation)


@pytest.fixture(scope="module")
def trained_run(completed_run, tiny_models, tmp_path_factory):
    """A copy of the finished selection run (the shared one is left as it is), trained and evaluated."""
    source, models = completed_run
    workdir = tmp_path_factory.mktemp("train_eval") / "wf"
    shutil.copytree(source, workdir, symlinks=True)  # with .snakemake: the metadata says rating is done
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    train_eval_config(workdir, models, tiny_models["tinyc"])
    counts = job_counts(workdir)
    assert counts == {"prepare_model": 1, "train_subset": 1, "evaluate": len(BENCHES), "all": 1}, counts
    start = time.monotonic()
    snakemake(workdir, "--cores", "2")
    print(f"train + {len(BENCHES)} evaluations: {time.monotonic() - start:.1f} s")
    return workdir, models


def test_train_and_eval_outputs(trained_run):
    workdir, _ = trained_run
    missing = sorted(set(BENCHMARKS) - set(BENCHES))
    if missing:
        print(f"benchmark modules not present, not run: {missing}")
    train_dir = workdir / "results/train" / RUN
    result = json.loads((train_dir / "train_result.json").read_text())
    assert result["n_examples"] == 6 and result["global_step"] == 3  # int(24 * 0.25) records, batch 2
    assert result["loss_curve"]["all_finite"]
    assert (train_dir / "config.json").is_file() and (train_dir / "model.safetensors").is_file()
    assert not (workdir / "results/train" / (RUN + ".checkpoints")).exists()  # removed after success
    assert (workdir / "logs/train_subset" / (RUN + ".log")).is_file()
    assert (workdir / "benchmarks/train_subset" / (RUN + ".tsv")).is_file()
    for bench in BENCHES:
        out = json.loads((workdir / "results/eval" / RUN / f"{bench}.json").read_text())
        assert out["benchmark"] == bench
        assert 0.0 <= out["value"] <= 100.0, (bench, out["value"])
        assert out["n"] > 0, bench
        assert out["model_dir"] == "results/train/" + RUN
        assert (workdir / "logs/evaluate" / RUN / f"{bench}.log").is_file()
        assert (workdir / "benchmarks/evaluate" / RUN / f"{bench}.tsv").is_file()
    assert job_counts(workdir) == {}  # nothing left to do


def test_eval_edit_reruns_only_that_benchmark(trained_run, tiny_models):
    workdir, models = trained_run
    bench = "tydiqa" if "tydiqa" in BENCHES else BENCHES[0]
    train_eval_config(workdir, models, tiny_models["tinyc"], **{bench: {"limit": 2}})
    assert job_counts(workdir) == {"evaluate": 1, "all": 1}
    train_eval_config(workdir, models, tiny_models["tinyc"], training={"learning_rate": 1e-4})
    assert job_counts(workdir) == {"train_subset": 1, "evaluate": len(BENCHES), "all": 1}
    # a base's own settings: a value equal to training.settings changes nothing; another one retrains that
    # base (the model itself is not prepared again)
    train_eval_config(workdir, models, tiny_models["tinyc"], base_settings={"epochs": TRAINING_SETTINGS["epochs"]})
    assert job_counts(workdir) == {}
    train_eval_config(workdir, models, tiny_models["tinyc"], base_settings={"epochs": 2})
    assert job_counts(workdir) == {"train_subset": 1, "evaluate": len(BENCHES), "all": 1}
    train_eval_config(workdir, models, tiny_models["tinyc"])
    assert job_counts(workdir) == {}


def test_full_subset_trains_at_proportion_one(trained_run, tiny_models):
    workdir, models = trained_run
    train_eval_config(workdir, models, tiny_models["tinyc"], methods=("full", "selectit"))
    out = snakemake(workdir, "-n", "train_all").stdout
    assert "results/train/tinyc/tiny/full/1.0/seed0/train_result.json" in out
    assert "results/subsets/tiny/full/1.0.json" in out
    train_eval_config(workdir, models, tiny_models["tinyc"])


def test_base_naming_a_rater_and_bad_configs(completed_run, tmp_path):
    source, models = completed_run
    workdir = tmp_path / "wf"
    shutil.copytree(source, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    judge = {"alpaca_eval": {"judge": {"type": "hf", "model_dir": "results/models/tinya"}}} if "alpaca_eval" in BENCHES else {}
    evaluation = {"benchmarks": BENCHES, "data_dir": str(REPO / "data/default/eval"), "settings": judge}
    # a base that names a rater trains on its prepared folder: no prepare_model job
    training = {"bases": {"tinya": {"rater": "tinya"}}, "proportions": [0.25]}
    write_tiny_config(workdir, models, training=training, evaluation=evaluation)
    counts = job_counts(workdir)
    assert counts == {"train_subset": 1, "evaluate": len(BENCHES), "all": 1}, counts
    assert "results/train/tinya/tiny/selectit/0.25/seed0" in snakemake(workdir, "-n").stdout
    assert job_counts(workdir, "train_all") == {"train_subset": 1, "train_all": 1}
    for training, evaluation_edit, message in [
        ({"bases": {"b": {"rater": "nope"}}}, {}, "names rater 'nope'"),
        ({"bases": {"tinya": {"hf": "/elsewhere"}}}, {}, "has the name of a rater"),
        ({"bases": {"b": {"rater": "tinya"}}}, {"settings": {BENCHES[0]: {"no_such_key": 1}}}, "no_such_key"),
        ({"bases": {"b": {"rater": "tinya", "settings": {"epochz": 1}}}}, {}, "epochz"),
    ]:
        write_tiny_config(workdir, models, training=training, evaluation={**evaluation, **evaluation_edit})
        proc = snakemake(workdir, "-n", check=False)
        assert proc.returncode != 0 and message in proc.stdout + proc.stderr, (training, proc.stderr[-2000:])


def test_sigkill_while_writing_an_evaluation_reruns_it_identically(trained_run, tiny_models, tmp_path):
    """Snakemake and an evaluation job SIGKILLed just before the result JSON is moved into place (tests/faults):
    the result never appears half-written, and after --unlock the rerun gives the same metric and predictions."""
    from tests.workflow_helpers import crash_env, run_until_killed

    source, models = trained_run
    workdir = tmp_path / "wf"
    shutil.copytree(source, workdir, symlinks=True)
    shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    bench = "tydiqa" if "tydiqa" in BENCHES else BENCHES[0]
    result = workdir / "results/eval" / RUN / f"{bench}.json"
    reference = json.loads(result.read_text())
    result.unlink()
    mark = tmp_path / "crashed"
    status = run_until_killed(workdir, crash_env(str(result.relative_to(workdir)), mark))
    assert mark.exists() and status != 0
    assert not result.exists()
    snakemake(workdir, "--unlock")
    snakemake(workdir, "--cores", "2")
    rerun = json.loads(result.read_text())
    for key in ("value", "n", "seed", "settings", "predictions"):
        assert rerun[key] == reference[key], key
    assert job_counts(workdir) == {}
