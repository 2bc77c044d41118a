"""configs/paper.yaml builds the paper's complete DAG with no data, models or prompt file present."""

import yaml

from tests.workflow_helpers import REPO, SNAKEMAKE


def test_paper_dry_run_job_counts(tmp_path):
    import subprocess

    config = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    proc = subprocess.run([SNAKEMAKE, "-n", "--configfile", "configs/paper.yaml", "--directory", str(tmp_path),
                           "--snakefile", str(REPO / "Snakefile")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:", 1)[1]
    counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()[3:] if len(line.split()) == 2
              and line.split()[1].isdigit()}
    n_models = len(config["models"])
    n_shards = config["datasets"]["alpaca_gpt4"]["n_shards"]
    assert counts["rate_shard"] == n_models * config["n_prompts"] * n_shards == 960
    assert counts["prepare_model"] == n_models
    assert counts["select_subset"] == len(config["selection"]["methods"])
    assert "smollm2" not in proc.stdout  # the embedded default's raters are not mixed in
