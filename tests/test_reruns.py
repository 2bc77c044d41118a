"""Exact partial reruns all the way down: on a completed tiny workflow (random-weight raters, every selection
method of configs/paper.yaml with its alpha and K sweeps scaled to three prompts, plus IFD and the judge;
training and one evaluation for full, random, length and SelectIT), each config edit plans, per rule and per
method, exactly the jobs that read what it changed (`snakemake -n`); fine-tunes follow subset content.

The matrix here is the README's "Which edits rerun what" table."""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, snakemake, tiny_records, write_tiny_config

PROMPTS = ["Rate the answer from 1 to 5.\n", "Give the response a score between 1 and 5.\n",
           "How good is this answer, 1 to 5?\n", "Score the reply from 1 (bad) to 5 (good).\n"]  # K = 3 of these
TRAINED = ["full", "random", "length", "selectit"]
BENCH = "mmlu"


def paper_methods() -> list[str]:
    """configs/paper.yaml's selection methods, with its K sweeps cut to the three prompts rated here."""
    methods = yaml.safe_load((REPO / "configs/paper.yaml").read_text())["selection"]["methods"]
    return [m for m in methods if not re.search(r"-k([0-9]+)$", m) or int(m.rsplit("-k", 1)[1]) <= 3] + ["ifd", "judge"]


METHODS = paper_methods()
LEVEL_METHODS = [m for m in METHODS if m.split("-")[0] in ("token_r", "sentence_r", "model_r", "selectit")]
READ_RATINGS = LEVEL_METHODS + ["random_unselected"]
NO_K1 = [m for m in METHODS if m != "selectit-k1"]


def config(workdir, models, base, records=None, prompts=PROMPTS, models_extra=None, **edits):
    selection = {"methods": METHODS, "proportions": [0.25], "seed": 0,
                 "ifd": {"max_length": 128, "token_budget": 1024}, "judge": {"type": "hf", "max_length": 512}}
    selection.update(edits.pop("selection", {}))
    training = {"bases": {"tinyc": {"hf": str(base)}}, "methods": TRAINED, "proportions": [0.25], "seeds": [0],
                "nproc": 1, "threads": 1,
                "settings": {"epochs": 1, "global_batch_size": 2, "per_device_batch_size": 2, "max_length": 96,
                             "gradient_checkpointing": False, "logging_steps": 1, **edits.pop("training", {})}}
    evaluation = {"benchmarks": [BENCH], "data_dir": str(REPO / "data/default/eval"), "threads": 1,
                  "settings": {BENCH: {"limit": 1, "n_shot": 1, **edits.pop("bench", {})}},
                  **edits.pop("evaluation", {})}
    scoring = {"variant": "paper", "alpha": 0.2, "model_weights": "param", **edits.pop("scoring", {})}
    return write_tiny_config(workdir, {**models, **(models_extra or {})}, records=records, prompts=prompts,
                             n_prompts=edits.pop("n_prompts", 3), selection=selection, training=training,
                             evaluation=evaluation, scoring=scoring, **edits)


def planned(workdir: Path) -> dict[str, dict[str, int]]:
    """Jobs `snakemake -n` plans: rule -> {method (or model / '-'): count}."""
    out = snakemake(workdir, "-n").stdout
    plan: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for rule, body in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):\n(.*?)(?=\n\n|\Z)", out, re.S | re.M):
        if rule == "all":
            continue
        wc = dict(re.findall(r"(\w+)=([^,\s]+)", (re.search(r"wildcards: (.*)", body) or [None, ""])[1]))
        plan[rule][wc.get("method") or wc.get("model") or "-"] += 1
    return {r: dict(v) for r, v in plan.items()}


def methods_of(plan, rule):
    return sorted(plan.get(rule, {}))


@pytest.fixture(scope="module")
def finished(tiny_models, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reruns") / "wf"
    models = {k: tiny_models[k] for k in ("tinya", "tinyb")}
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24))
    snakemake(workdir, "--cores", "2", timeout=1800)
    assert planned(workdir) == {}
    return workdir, models, tiny_models


def _restore(workdir, models, tiny_models):
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24))
    assert planned(workdir) == {}


NONE = {}
# edit -> the plan per rule: methods (selection, levels, training, evaluation), or a job count for the rest.
MATRIX = {
    "alpha": (dict(scoring={"alpha": 0.5}), {
        "sentence_scores": 2 * 2,  # both raters: K = 3 and K = 1 at the new alpha
        "level_scores": ["selectit", "selectit-k1", "selectit-k3", "sentence_r"],
        "fuse_scores": 1,
        "select_subset": ["random_unselected", "selectit", "selectit-k1", "selectit-k3", "sentence_r"],
        "train_subset": ["selectit"], "evaluate": ["selectit"]}),
    "n_prompts": (dict(n_prompts=4), {
        "rate_shard": 4,  # the fourth prompt x 2 raters x 2 shards
        "merge_ratings": 2, "token_scores": 2, "fuse_scores": 1,
        "sentence_scores": 2 * 6,  # K = 4 at alpha 0.2, 0.4, 0.6, 0.8; K = 1 and K = 3 (their token file changed)
        "level_scores": LEVEL_METHODS, "select_subset": READ_RATINGS,
        "train_subset": ["selectit"], "evaluate": ["selectit"]}),
    "one prompt's text": (dict(prompts=PROMPTS[:2] + ["Score it 1-5, digits only.\n"] + PROMPTS[3:]), {
        "rate_shard": 4,  # that prompt x 2 raters x 2 shards
        "merge_ratings": 2, "token_scores": 2, "fuse_scores": 1,
        "sentence_scores": 2 * 5,  # (K, alpha) in use: (3, .2), (3, .4), (3, .6), (3, .8), (1, .2)
        "level_scores": LEVEL_METHODS, "select_subset": READ_RATINGS,
        "train_subset": ["selectit"], "evaluate": ["selectit"]}),
    # the released code divides by K - 1: K = 1 stops the dry run under `released`, so that sweep point goes
    "scoring.variant": (dict(scoring={"variant": "released"}, selection={"methods": NO_K1}), {
        "token_scores": 2, "sentence_scores": 2 * 4, "fuse_scores": 1,
        "level_scores": [m for m in LEVEL_METHODS if m in NO_K1],
        "select_subset": [m for m in READ_RATINGS if m in NO_K1],
        "train_subset": ["selectit"], "evaluate": ["selectit"]}),
    "Token-R's prompt line": (dict(scoring={"token_prompt": 2}), {
        "level_scores": ["model_r", "token_r"], "fuse_scores": 1, "select_subset": ["model_r", "token_r"]}),
    "model weights": (dict(scoring={"model_weights": {"tinya": 0.3, "tinyb": 0.7}}), {
        "fuse_scores": 1, "level_scores": LEVEL_METHODS, "select_subset": READ_RATINGS,
        "train_subset": ["selectit"], "evaluate": ["selectit"]}),
    "selection proportion": (dict(selection={"proportions": [0.25, 0.5]}), {
        "select_subset": sorted(set(METHODS) - {"full"})}),
    "selection seed": (dict(selection={"seed": 7}), {
        "select_subset": ["random", "random_unselected"], "train_subset": ["random"], "evaluate": ["random"]}),
    "judge threshold": (dict(selection={"judge": {"type": "hf", "max_length": 512, "threshold": 2.0}}), {
        "select_subset": ["judge"]}),
    "a training setting": (dict(training={"learning_rate": 1e-4}), {
        "train_subset": TRAINED, "evaluate": TRAINED}),
    # padded micro-batches instead of packed ones: the same examples and loss, other rounding: every fine-tune
    "the training collator": (dict(training={"packing": False}), {"train_subset": TRAINED, "evaluate": TRAINED}),
    "one benchmark's setting": (dict(bench={"limit": 2}), {"evaluate": TRAINED}),
    # batch sizes reach the jobs as resources, not params: a smaller budget on a smaller GPU reruns nothing
    "the batch budgets": (dict(rating={"max_length": 256, "dtype": "fp32", "token_budget": 512, "threads": 1},
                               selection={"ifd": {"max_length": 128, "token_budget": 300},
                                          "judge": {"type": "hf", "max_length": 512, "token_budget": 700}}), {}),
}


def _expected(spec):
    return {rule: (sorted(v) if isinstance(v, list) else v) for rule, v in spec.items()}


def _actual(plan, spec):
    return {rule: (methods_of(plan, rule) if isinstance(spec.get(rule), list) else sum(plan[rule].values()))
            for rule in plan}


@pytest.mark.slow
@pytest.mark.parametrize("edit", list(MATRIX))
def test_an_edit_plans_exactly_what_reads_it(finished, edit):
    workdir, models, tiny_models = finished
    kwargs, spec = MATRIX[edit]
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24), **kwargs)
    try:
        plan = planned(workdir)
        assert _actual(plan, spec) == _expected(spec)
    finally:
        _restore(workdir, models, tiny_models)


@pytest.mark.slow
def test_switching_the_engine_reruns_the_model_jobs_that_run_on_it(finished):
    """rating.engine: other numerics, like a dtype change: every rating, IFD and judge shard, nothing prepared again;
    evaluation.engine: exactly the evaluations. (The dry run checks that vLLM is installed: CI installs it.)"""
    from selectit.engines.vllm import missing

    if missing():
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the vLLM engine: {missing()}")
        pytest.skip(missing())
    workdir, models, tiny_models = finished
    rating = {"max_length": 256, "dtype": "fp32", "token_budget": 2048, "threads": 1}
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24), rating={**rating, "engine": "vllm"})
    try:
        plan = planned(workdir)
        assert plan["rate_shard"] == {"tinya": 6, "tinyb": 6}  # 3 prompts x 2 shards each
        assert plan["ifd_shard"] == {"tinya": 2} and sum(plan["judge_shard"].values()) == 2
        assert "prepare_model" not in plan and "prepare_data" not in plan
        config(workdir, models, tiny_models["tinyc"], records=tiny_records(24), evaluation={"engine": "vllm"})
        assert _actual(planned(workdir), {"evaluate": []}) == _expected({"evaluate": TRAINED})
    finally:
        _restore(workdir, models, tiny_models)


@pytest.mark.slow
def test_a_rater_added_rates_it_and_reselects_only_what_reads_ratings(finished):
    workdir, models, tiny_models = finished
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24), models_extra={"tinyd": tiny_models["tinyc"]})
    try:
        plan = planned(workdir)
        assert plan["prepare_model"] == {"tinyd": 1} and plan["rate_shard"] == {"tinyd": 6}  # 3 prompts x 2 shards
        assert plan["merge_ratings"] == plan["token_scores"] == {"tinyd": 1}
        assert methods_of(plan, "level_scores") == sorted(LEVEL_METHODS)
        assert methods_of(plan, "select_subset") == sorted(READ_RATINGS)
        assert methods_of(plan, "train_subset") == ["selectit"]
        assert "ifd_shard" not in plan and "judge_shard" not in plan  # IFD and the judge use the first rater
    finally:
        _restore(workdir, models, tiny_models)


def _times(workdir):
    return {m: (workdir / f"results/train/tinyc/tiny/{m}/{1.0 if m == 'full' else 0.25}/seed0/train_result.json")
            .stat().st_mtime_ns for m in TRAINED}


def _subsets(workdir):
    return {m: (workdir / f"results/subsets/tiny/{m}/{1.0 if m == 'full' else 0.25}.json").read_bytes()
            for m in TRAINED}


@pytest.mark.slow
def test_fine_tunes_follow_subset_content_not_file_times(finished):
    """Records reordered (same content, same ids): every subset is rewritten, and exactly the fine-tunes whose
    subset content changed run again (full and random follow record order; SelectIT's top records do not)."""
    workdir, models, tiny_models = finished
    before_times, before = _times(workdir), _subsets(workdir)
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24)[::-1])
    try:
        plan = planned(workdir)
        assert "rate_shard" not in plan and "ifd_shard" not in plan and "judge_shard" not in plan
        assert methods_of(plan, "select_subset") == sorted(METHODS)  # the samples table changed
        snakemake(workdir, "--cores", "2", timeout=1800)
        after_times, after = _times(workdir), _subsets(workdir)
        changed = sorted(m for m in TRAINED if after[m] != before[m])
        retrained = sorted(m for m in TRAINED if after_times[m] != before_times[m])
        assert retrained == changed
        assert "selectit" not in changed and "full" in changed
        sel = workdir / "results/subsets/tiny/selectit/0.25.json"
        assert sel.stat().st_mtime_ns > before_times["selectit"]  # rewritten, yet not trained again
        assert planned(workdir) == {}
    finally:
        config(workdir, models, tiny_models["tinyc"], records=tiny_records(24))
        snakemake(workdir, "--cores", "2", timeout=1800)
        assert planned(workdir) == {}


@pytest.mark.slow
def test_alpha_edit_retrains_selectit_exactly_when_its_subset_changes(finished):
    workdir, models, tiny_models = finished
    before_times, before = _times(workdir), _subsets(workdir)
    config(workdir, models, tiny_models["tinyc"], records=tiny_records(24), scoring={"alpha": 3.0})
    try:
        snakemake(workdir, "--cores", "2", timeout=1800)
        after_times, after = _times(workdir), _subsets(workdir)
        assert sorted(m for m in TRAINED if after_times[m] != before_times[m]) == \
            sorted(m for m in TRAINED if after[m] != before[m])
        assert all(after_times[m] == before_times[m] for m in ("full", "random", "length"))
        manifest = json.loads((workdir / "results/subsets/tiny/selectit/0.25.manifest.json").read_text())
        assert manifest["config"]["alpha"] == 3.0 and manifest["config"]["k"] == 3
        random_manifest = json.loads((workdir / "results/subsets/tiny/random/0.25.manifest.json").read_text())
        assert "alpha" not in random_manifest["config"]  # a random subset records only what it depends on
    finally:
        config(workdir, models, tiny_models["tinyc"], records=tiny_records(24))
        snakemake(workdir, "--cores", "2", timeout=1800)
        assert planned(workdir) == {}
