"""The planned GPU bill (selectit.cost, `snakemake plan`): its arithmetic on a hand-made config, its jobs against
`snakemake -n` of configs/paper.yaml, its errors, and the rule in a tiny workflow."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from selectit import cost
from selectit.errors import InputError
from selectit.paper import tables
from tests.test_paper_config import CONFIG as PAPER
from tests.test_paper_config import dry_run
from tests.workflow_helpers import REPO, job_counts, snakemake, tiny_records, write_tiny_config


def small_config(tmp_path, **training_settings) -> dict:
    (tmp_path / "local.json").write_text(json.dumps(tiny_records(40)))
    return {
        "datasets": {"local": {"path": "local.json", "n_shards": 2}},
        "models": {"rater": {"hf": "x/rater"}},
        "n_prompts": 3,
        "selection": {"methods": ["selectit", "random"]},
        "training": {"bases": {"base": {"hf": "x/base"}}, "methods": ["selectit"], "proportions": [0.5],
                     "seeds": [0, 1], "settings": {"epochs": 2, "per_device_batch_size": 4, **training_settings}},
        "evaluation": {"benchmarks": ["gsm"], "settings": {"gsm": {"limit": 10, "max_new_tokens": 100}}},
        "paper": {"proportion": 0.5, "main_bases": ["base"], "methods": ["selectit"], "k_values": [3], "alphas": [0.2],
                  "strategies": ["selectit"], "quantities": [0.5], "other_methods": ["selectit"],
                  "cost": {"thetas": {"rater": 1e9, "base": 2e9}, "tokens_per_row": 100, "tokens_per_record": 50,
                           "peak_tflops": 100, "mfu": {"generation": 0.1}}},
    }


def test_plan_arithmetic(tmp_path):
    frame = cost.plan(small_config(tmp_path), root=tmp_path).set_index("Stage")
    rate = frame.loc["rate local with rater"]
    assert rate["Jobs"] == 3 * 2 and rate["Tokens"] == 40 * 3 * 100 and rate["FLOPs"] == 2 * 1e9 * 40 * 3 * 100
    assert rate["GPU-hours"] == pytest.approx(rate["FLOPs"] / (100e12 * 0.4) / 3600)
    assert "IFD, total" not in frame.index and "judge, total" not in frame.index  # no method uses them
    train = frame.loc["fine-tune base"]
    # selectit at 0.5 and (the data-quantity figure's end point) the full data, seeds 0 and 1
    assert train["Jobs"] == 2 * 2
    assert train["Tokens"] == 2 * (40 * 0.5 + 40) * 50 * 2  # seeds x examples x tokens x epochs
    assert train["FLOPs"] == 6 * 2e9 * train["Tokens"]
    # packed (the default) against right-padded micro-batches of 4: padded share 42.6 % on real records
    assert train["GPU-hours (padded)"] / train["GPU-hours"] == pytest.approx(1 / (1 - 0.426))
    assert train["GPU-hours (packed)"] == pytest.approx(train["GPU-hours"])
    prompt, new = frame.loc["evaluate gsm (forward)"], frame.loc["evaluate gsm (generation)"]
    assert prompt["Jobs"] == 4 and prompt["Tokens"] == 4 * 10 * cost.EVAL_PROMPT_TOKENS["gsm"]
    assert new["Tokens"] == 4 * 10 * 100 and new["MFU"] == 0.1
    assert new["GPU-hours"] == pytest.approx(2 * 2e9 * new["Tokens"] / (100e12 * 0.1) / 3600)
    total = frame.loc["all stages, total"]
    stage_totals = frame[frame.index.str.endswith(", total") & (frame.index != "all stages, total")]
    assert total["GPU-hours"] == pytest.approx(stage_totals["GPU-hours"].sum())
    assert total["GPU-hours"] == pytest.approx(frame[~frame.index.str.endswith(", total")]["GPU-hours"].sum())
    # with the padded collator configured, the plan charges the padding
    padded = cost.plan(small_config(tmp_path, packing=False), root=tmp_path).set_index("Stage")
    assert padded.loc["fine-tune base", "GPU-hours"] == pytest.approx(train["GPU-hours (padded)"])


def test_eval_items_follow_each_benchmarks_limit():
    assert cost.eval_items("bbh", None)[0] == 27 * 40  # the default: 40 examples per task
    assert cost.eval_items("bbh", {"limit": None})[0] == 6511  # every example of the 27 tasks
    assert cost.eval_items("tydiqa", {"limit": None, "languages": ["english"]})[0] == round(5077 / 9)
    assert cost.eval_items("mmlu", {"limit": 10})[0] == 570 and cost.eval_items("mmlu", None) == (14042, 1, 0)
    assert cost.eval_items("gsm", None)[0] == 200 and cost.eval_items("gsm", {"limit": "all"})[0] == 1319
    assert cost.eval_items("codex", None) == (164, 20, 512)  # 20 samples a problem
    assert cost.eval_items("alpaca_eval", {"limit": 5, "max_new_tokens": 64}) == (5, 1, 64)


def test_plan_errors_name_the_key(tmp_path):
    config = small_config(tmp_path)
    config["datasets"]["hub"] = {"hf_name": "x/y"}
    with pytest.raises(InputError, match="paper.cost.records has no record count for Hub dataset 'hub'"):
        cost.plan(config, root=tmp_path)
    with pytest.raises(InputError, match="paper.cost.padded_share has no share for per-device batch 6"):
        cost.plan(small_config(tmp_path, per_device_batch_size=6), root=tmp_path)
    config = small_config(tmp_path)
    del config["paper"]["cost"]["thetas"]["base"]
    with pytest.raises(InputError, match="thetas has no parameter count for training base 'base'"):
        cost.plan(config, root=tmp_path)
    config = small_config(tmp_path)
    config["paper"]["cost"]["mfu"] = {"decode": 0.1}
    with pytest.raises(InputError, match="paper.cost.mfu: unknown job kinds"):
        cost.plan(config, root=tmp_path)


def test_paper_plan_has_the_dry_runs_jobs(tmp_path):
    """The plan of configs/paper.yaml counts the jobs that `snakemake -n all tables/all figures/all` plans."""
    frame = cost.plan(PAPER, root=REPO).set_index("Stage")
    counts, _ = dry_run(tmp_path, "all", "tables/all", "figures/all")
    assert frame.loc["rating, total", "Jobs"] == counts["rate_shard"]
    assert frame.loc["fine-tuning, total", "Jobs"] == counts["train_subset"]
    assert frame.loc["evaluation, total", "Jobs"] == counts["evaluate"]
    assert frame.loc["IFD, total", "Tokens"] > 0 and frame.loc["judge, total", "GPU-hours"] == 0  # the judge is an API
    t = frame.loc["fine-tuning, total"]
    assert t["GPU-hours (padded)"] > 1.5 * t["GPU-hours (packed)"]
    print(frame[["Jobs", "GPU-hours", "GPU-hours (padded)"]].to_string())


def test_table9_shows_the_planned_bill(tmp_path):
    planned = tables.planned_cost(REPO / "configs/paper.yaml", tokens_per_row=250.0, root=REPO)
    table = tables.table9_efficiency(planned.iloc[:0], planned)
    stages = table.index.get_level_values("Stage")
    for row in ("rate alpaca_gpt4 with llama2_70b", "fine-tuning, total", "evaluate gsm (generation)",
                "all stages, total"):
        assert row in stages
    same = cost.plan(PAPER, root=REPO, tokens_per_row=250.0).set_index("Stage")
    assert table.xs("all stages, total", level="Stage")["GPU-hours"].iloc[0] == pytest.approx(
        same.loc["all stages, total", "GPU-hours"])


def test_snakemake_plan_in_a_workflow(tmp_path, tiny_models):
    workdir = tmp_path / "wf"
    models = {k: tiny_models[k] for k in ("tinya", "tinyb")}
    training = {"bases": {"tinyc": {"hf": str(tiny_models["tinyc"])}}, "methods": ["selectit"],
                "proportions": [0.25], "seeds": [0], "settings": {"per_device_batch_size": 2}}
    evaluation = {"benchmarks": ["mmlu"], "data_dir": str(REPO / "data/default/eval")}
    write_tiny_config(workdir, models, training=training, evaluation=evaluation)
    (workdir / "configs").symlink_to(REPO / "configs")  # Table 9 plans configs/paper.yaml
    counts = job_counts(workdir, "plan")
    assert counts == {"prepare_model": 3, "plan": 1}  # the models' sizes are read from their model.json
    snakemake(workdir, "--cores", "2", "plan")
    csv = pd.read_csv(workdir / "results/plan/gpu_hours.csv").set_index("Stage")
    assert csv.loc["rating, total", "Jobs"] == 2 * 2 * 2  # raters x prompts x shards
    assert csv.loc["fine-tuning, total", "Jobs"] == job_counts(workdir, "all", "tables/all")["train_subset"]
    md = (workdir / "results/plan/gpu_hours.md").read_text()
    assert "| fine-tune tinyc" in md and "padded share at each per-device batch" in md
    assert job_counts(workdir, "plan") == {}
    # any config edit replans, and only the plan
    write_tiny_config(workdir, models, evaluation=evaluation,
                      training={**training, "settings": {"per_device_batch_size": 2, "packing": False}})
    assert job_counts(workdir, "plan") == {"plan": 1}
    snakemake(workdir, "--cores", "1", "plan")
    again = pd.read_csv(workdir / "results/plan/gpu_hours.csv").set_index("Stage")
    assert again.loc["fine-tune tinyc", "GPU-hours"] == pytest.approx(csv.loc["fine-tune tinyc", "GPU-hours (padded)"])
    # a Hub dataset without its size stops the plan with the key to set
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["datasets"]["hub"] = {"hf_name": "x/y", "format": "alpaca"}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(workdir, "--cores", "1", "plan", check=False)
    assert proc.returncode != 0 and "paper.cost.records" in proc.stderr + proc.stdout
