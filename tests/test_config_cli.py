"""`snakemake --config key=value` merges on top of whichever config is in force: the workflow's config.yaml when no
--configfile is given, the given file otherwise (which still replaces config.yaml instead of merging into it)."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.workflow_helpers import REPO, SNAKEMAKE, write_tiny_config

MODELS = {"ma": Path("/nonexistent/ma")}  # a dry run never opens the raters


def dry_run(workdir: Path, *args: str) -> str:
    """`snakemake -n` in workdir without the helpers' --configfile, so the Snakefile picks the config itself."""
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--workflow-profile", str(REPO / "profiles/default"), "-n", *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def rate_jobs(out: str) -> list[str]:
    """The wildcards of every rate_shard job of a dry run."""
    blocks = out.split("rule rate_shard:")[1:]
    return [next(l.strip() for l in b.splitlines() if l.strip().startswith("wildcards:")) for b in blocks]


def test_config_overrides_merge_on_top_of_the_embedded_default(tmp_path):
    write_tiny_config(tmp_path, MODELS)  # the workdir's config.yaml: the Snakefile's embedded default there
    assert len(rate_jobs(dry_run(tmp_path))) == 2 * 2  # prompts x shards
    jobs = rate_jobs(dry_run(tmp_path, "--config", "n_prompts=1"))
    assert len(jobs) == 2  # one prompt x two shards: config.yaml is loaded and the override applied to it
    assert all("dataset=tiny" in j for j in jobs)


def test_a_configfile_replaces_the_default_and_config_overrides_merge_on_top_of_it(tmp_path):
    write_tiny_config(tmp_path, MODELS)
    other = yaml.safe_load((tmp_path / "config.yaml").read_text())
    other["datasets"] = {"other": {**other["datasets"]["tiny"], "n_shards": 3}}
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    jobs = rate_jobs(dry_run(tmp_path, "--configfile", "other.yaml"))
    assert len(jobs) == 2 * 3 and all("dataset=other" in j for j in jobs)  # no job of config.yaml's dataset
    jobs = rate_jobs(dry_run(tmp_path, "--configfile", "other.yaml", "--config", "n_prompts=1"))
    assert len(jobs) == 3 and all("dataset=other" in j for j in jobs)
