"""configs/paper.yaml builds the paper's complete DAG with no data, models or prompt file present."""

import re
import subprocess

import pytest
import yaml

from selectit import layout, resources
from selectit.evaluation import BENCHMARKS
from selectit.paper import plan
from selectit.paper.figure_registry import FIGURES
from selectit.paper.registry import TABLES
from tests.workflow_helpers import REPO, SNAKEMAKE

CONFIG = yaml.safe_load((REPO / "configs/paper.yaml").read_text())


def run_dry(tmp_path, *targets, configfile="configs/paper.yaml", quiet=True):
    """`snakemake -n` in an empty folder that has only the repository's configs/ (as a fresh checkout has: the
    DeepSpeed JSON and the planned config are read from there)."""
    if not (tmp_path / "configs").exists():
        (tmp_path / "configs").symlink_to(REPO / "configs")
    return subprocess.run([SNAKEMAKE, *targets, "-n", "--configfile", configfile, "--directory",
                           str(tmp_path), "--snakefile", str(REPO / "Snakefile"), *(["--quiet", "rules"] * quiet)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def dry_run(tmp_path, *targets):
    """Job counts of `snakemake -n` (run_dry) and its output."""
    proc = run_dry(tmp_path, *targets)
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
    # evaluation.data_dir is resources/eval: every file of the six benchmarks is downloaded, once
    assert counts["download_eval_file"] == len(resources.files_for(CONFIG["evaluation"].get("benchmarks",
                                                                                            BENCHMARKS))) == 173
    assert counts["rate_shard"] == rating_jobs()
    assert counts["prepare_model"] == len(CONFIG["models"]) + 2  # Mistral-7B and LLaMA-3-8B are no raters
    # every registered table and figure, one wildcard rule each; the audit's only when the audit is on, and the
    # paper config leaves it off (nothing of the audit is planned)
    assert not (CONFIG.get("audit") or {}).get("enabled") and "audit_scores" not in counts
    assert counts["table"] == len([t for t in TABLES if t != "audit"])
    assert counts["figure"] == len([f for f in FIGURES if f != "audit"])
    for rule in ("tables_index", "embed_samples", "figure_index"):
        assert counts[rule] == 1, rule


def test_an_evaluation_of_the_paper_reads_the_downloaded_benchmark_data(tmp_path):
    run = next(r for r in plan.all_runs(CONFIG) if r.method == "selectit")
    target = layout.eval_result(run.base, run.dataset, run.method, run.proportion, run.seed, "gsm")
    proc = run_dry(tmp_path, target, quiet=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    block = re.search(r"^rule evaluate:\n(.*?)\n\n", out, re.S | re.M)
    assert block, out[-3000:]
    inputs = re.search(r"^ +input: (.*)$", block[1], re.M)[1].split(", ")
    assert f"{resources.DOWNLOAD_DIR}/gsm8k/test.jsonl" in inputs  # the real GSM8K test set, downloaded
    assert re.search(r"^ +output: " + re.escape(target) + "$", block[1], re.M)
    download = re.search(r"^(local)?rule download_eval_file:\n(.*?)\n\n", out, re.S | re.M)
    assert download and f"output: {resources.DOWNLOAD_DIR}/gsm8k/test.jsonl\n" in download[2]


@pytest.mark.parametrize("broken, message", [
    (lambda e: e["settings"]["alpaca_eval"].update(judge={"type": "hf"}),
     "config evaluation.settings.alpaca_eval.judge.model_dir: the hf judge needs a prepared local model folder"),
    (lambda e: e["settings"]["alpaca_eval"]["judge"].update(model=""),
     "config evaluation.settings.alpaca_eval.judge.model: the openai judge needs one"),
    (lambda e: e["settings"].update(gsm={"n_shots": 8}), "config evaluation.settings.gsm: unknown gsm setting"),
    (lambda e: e.update(data_dir="data/paper_eval"),
     "config evaluation.data_dir: data/paper_eval does not exist"),
])
def test_one_broken_evaluation_key_stops_the_paper_dry_run(tmp_path, broken, message):
    """Before any job is planned, with one message that names the key (not inside an evaluate job, after
    the fine-tunes have spent their GPU hours)."""
    config = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    broken(config["evaluation"])
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = run_dry(tmp_path, "tables/all", configfile=str(tmp_path / "broken.yaml"))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert message in out, out[-3000:]
    assert out.count("config evaluation.") == 1 and "Job stats" not in out
