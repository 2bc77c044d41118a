"""The selection audit in the workflow: canaries are rated in their own shards under their own path, no canary
reaches a subset, a fine-tune or a release, and enabling, disabling or resizing the audit plans no rating job
for the real data (`snakemake -n`, per rule and dataset)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.workflow_helpers import REPO, job_counts, snakemake, write_tiny_config

RECORDS = [{k: r[k] for k in ("instruction", "input", "output")}
           for r in json.loads((REPO / "data/default/instructions.json").read_text())[:40]]


def planned_by_dataset(workdir: Path, *targets: str) -> Counter:
    """(rule, dataset) -> jobs `snakemake -n` plans."""
    out = snakemake(workdir, "-n", *targets).stdout
    plan = Counter()
    for rule, body in re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):\n(.*?)(?=\n\n|\Z)", out, re.S | re.M):
        m = re.search(r"wildcards: .*?dataset=([^,\s]+)", body)
        plan[(rule, m[1] if m else "-")] += 1
    return plan


def write(workdir, models, base, **audit):
    return write_tiny_config(
        workdir, models, records=RECORDS if not (workdir / "data.json").exists() else None,
        selection={"methods": ["selectit", "random", "length", "ifd"], "proportions": [0.25], "seed": 0,
                   "ifd": {"max_length": 128, "token_budget": 1024}},
        training={"bases": {"tinyc": {"hf": str(base)}}, "methods": [], "proportions": [0.25], "seeds": [0]},
        evaluation={"benchmarks": ["mmlu"], "data_dir": str(REPO / "data/default/eval")},
        audit={"enabled": True, "n": 12, **audit})


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory, tiny_models):
    workdir = tmp_path_factory.mktemp("audit")
    models = {k: tiny_models[k] for k in ("tinya", "tinyb")}
    write(workdir, models, tiny_models["tinyc"])
    plan = planned_by_dataset(workdir)
    # 2 raters x 2 prompts: 2 shards of the data, 1 of the canaries; IFD likewise with one rater
    assert plan[("rate_shard", "tiny")] == 8 and plan[("rate_shard", "tiny.audit")] == 4
    assert plan[("ifd_shard", "tiny")] == 2 and plan[("ifd_shard", "tiny.audit")] == 1
    assert plan[("select_subset", "tiny.audit")] == 0 and plan[("audit_scores", "tiny")] == 1
    snakemake(workdir, "--cores", "2")
    return workdir, models


def test_canaries_are_rated_in_their_own_shards_and_every_scorer_is_measured(audited_run):
    workdir, models = audited_run
    shards = sorted(p.relative_to(workdir).as_posix() for p in (workdir / "results/ratings").rglob("*.parquet"))
    assert sum(s.startswith("results/ratings/tiny.audit/") for s in shards) == 4
    assert sum(s.startswith("results/ratings/tiny/") for s in shards) == 8
    canaries = pd.read_parquet(workdir / "results/data/tiny.audit/samples.parquet")
    samples = pd.read_parquet(workdir / "results/data/tiny/samples.parquet")
    assert len(canaries) == 12 and set(canaries["canary_of"]) <= set(samples["id"])
    metrics = pd.read_csv(workdir / "results/audit/tiny/metrics.csv")
    scorers = list(dict.fromkeys(metrics["scorer"]))
    assert scorers == ["random", "length", "token_r", "sentence_r", "model_r", "selectit", "ifd",
                       "token@tinya", "token@tinyb", "sentence@tinya", "sentence@tinyb"]
    overall = metrics[metrics["kind"] == "all"].set_index("scorer")
    assert overall["auroc"].between(0, 1).all() and (overall["n_bad"] == 12).all()
    assert set(metrics["kind"]) == {"all", *canaries["kind"]}
    # the audit's numbers are recomputed from the files the job read
    from selectit.audit import auroc

    level = pd.read_parquet(workdir / "results/scores/tiny/levels/selectit.parquet").set_index("id")["score"]
    fake = pd.read_parquet(workdir / "results/scores/tiny.audit/levels/selectit.parquet").set_index("id")["score"]
    assert overall.loc["selectit", "auroc"] == pytest.approx(
        auroc(level.loc[canaries["canary_of"]], fake.loc[canaries["id"]]))


def test_no_canary_reaches_a_subset_a_fine_tune_or_a_release(audited_run):
    workdir, _ = audited_run
    canary_ids = set(pd.read_parquet(workdir / "results/data/tiny.audit/samples.parquet")["id"])
    for manifest in (workdir / "results/subsets").rglob("*.manifest.json"):
        assert not set(json.loads(manifest.read_text())["selected_ids"]) & canary_ids
    assert not (workdir / "results/subsets/tiny.audit").exists()
    for target in ["results/subsets/tiny.audit/selectit/0.25.json",
                   "results/train/tinyc/tiny.audit/selectit/0.25/seed0/train_result.json",
                   "results/release/tiny.audit/selectit/0.25/README.md"]:
        proc = snakemake(workdir, "-n", target, check=False)
        assert proc.returncode != 0, target
        assert "MissingRule" in proc.stdout + proc.stderr or "Missing input" in proc.stdout + proc.stderr, target
    # the same targets of the real data are plannable
    assert job_counts(workdir, "results/train/tinyc/tiny/selectit/0.25/seed0/train_result.json")["train_subset"] == 1


def test_toggling_or_resizing_the_audit_rates_no_shard_of_the_data(audited_run):
    workdir, models = audited_run
    base = yaml.safe_load((workdir / "config.yaml").read_text())["training"]["bases"]["tinyc"]["hf"]
    try:
        write(workdir, models, base, enabled=False)
        assert job_counts(workdir) == {}  # nothing at all: the data's scores and subsets stand
        write(workdir, models, base, n=16)
        plan = planned_by_dataset(workdir)
        assert {k: v for k, v in plan.items() if k[0] in ("rate_shard", "ifd_shard")} == {
            ("rate_shard", "tiny.audit"): 4, ("ifd_shard", "tiny.audit"): 1}
        assert not [k for k in plan if k[1] == "tiny" and k[0] != "audit_scores"]
        write(workdir, models, base, kinds=["refusal", "off_topic"])
        plan = planned_by_dataset(workdir)
        assert plan[("rate_shard", "tiny.audit")] == 4 and plan[("rate_shard", "tiny")] == 0
    finally:
        write(workdir, models, base)
    assert job_counts(workdir) == {}  # back as it was: nothing reruns
