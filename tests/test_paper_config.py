"""configs/paper.yaml builds the paper's complete DAG with no data, models or prompt file present."""

import subprocess

import yaml

from selectit.paper import plan
from selectit.paper.registry import TABLES
from tests.workflow_helpers import REPO, SNAKEMAKE

CONFIG = yaml.safe_load((REPO / "configs/paper.yaml").read_text())


def dry_run(tmp_path, *targets):
    """Job counts of `snakemake -n` in an empty folder that has only the repository's configs/ (as a fresh
    checkout has: the DeepSpeed JSON and the planned config are read from there)."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    proc = subprocess.run([SNAKEMAKE, *targets, "-n", "--configfile", "configs/paper.yaml", "--directory",
                           str(tmp_path), "--snakefile", str(REPO / "Snakefile"), "--quiet", "rules"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:", 1)[1]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()[3:] if len(line.split()) == 2
              and line.split()[1].isdigit()}
    return counts, proc.stdout


def rating_jobs():
    return sum(len(CONFIG["models"]) * CONFIG["n_prompts"] * d["n_shards"] for d in CONFIG["datasets"].values())


def test_paper_dry_run_job_counts(tmp_path):
    counts, out = dry_run(tmp_path)
    n_models = len(CONFIG["models"])
    assert CONFIG["datasets"]["alpaca_gpt4"]["n_shards"] * n_models * CONFIG["n_prompts"] == 960
    assert counts["rate_shard"] == rating_jobs()  # every dataset (Table 7's too) rated by every rater
    assert counts["prepare_model"] == n_models + sum("rater" not in s for s in CONFIG["training"]["bases"].values())
    assert counts["select_subset"] >= len(CONFIG["selection"]["methods"]) * len(CONFIG["datasets"])
    assert "smollm2" not in out  # the embedded default's raters are not mixed in


def test_paper_tables_and_figures_dry_run_job_counts(tmp_path):
    counts, _ = dry_run(tmp_path, "tables/all", "figures/all")  # its time: benchmarks/paper_dag.py
    runs = plan.all_runs(CONFIG)
    n_benchmarks = 6  # evaluation.benchmarks is unset: all six
    assert counts["train_subset"] == len(runs)
    assert counts["evaluate"] == len(runs) * n_benchmarks
    assert counts["rate_shard"] == rating_jobs()
    assert counts["prepare_model"] == len(CONFIG["models"]) + 2  # Mistral-7B and LLaMA-3-8B are no raters
    assert counts["table"] == len(TABLES)  # every registered table, one wildcard rule
    for rule in ("tables_index", "embed_samples", "figure_data_quantity",
                 "figure_length_and_calculation", "figure_trends_vs_proportion", "figure_tsne",
                 "figure_score_distributions", "figure_index"):
        assert counts[rule] == 1, rule
