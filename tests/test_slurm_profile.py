"""`make slurm-profile` installs profiles/slurm as the user's Snakemake profile `slurm`, partition and account from
its arguments or from sinfo / sacctmgr, so that `snakemake --profile slurm` (as users type it) finds it. Here
sinfo and sacctmgr are stand-ins on PATH; tests/test_slurm.py runs the same against a real one-node Slurm."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.workflow_helpers import REPO, snakemake, write_tiny_config

SINFO = 'echo "cpu* (null)"; echo "gpu gpu:4"; echo "gpu gpu:a100:2"'
SACCTMGR = 'case "$*" in *defaultaccount*) echo proj42;; *) exit 1;; esac'
NO_ACCOUNTING = 'echo "sacctmgr: error: Problem talking to the database" >&2; exit 1'


def fake_commands(tmp_path: Path, **scripts: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return bin_dir


def make_profile(home: Path, bin_dir: Path | None, *args: str, xdg: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "SLURM_CONF")}
    # PATH holds only the stand-ins (the Makefile runs the venv's python by its path): no real sinfo / sacctmgr
    env.update(HOME=str(home), PATH=str(bin_dir or home / "no-bin"))
    if xdg:
        env["XDG_CONFIG_HOME"] = str(xdg)
    return subprocess.run([shutil.which("make"), "-s", "-C", str(REPO), "slurm-profile", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def default_resources(profile: Path) -> dict:
    return yaml.safe_load(profile.read_text())["default-resources"]


def test_installs_the_profile_from_sinfo_and_sacctmgr_and_snakemake_finds_it(tmp_path):
    home = tmp_path / "home"
    proc = make_profile(home, fake_commands(tmp_path, sinfo=SINFO, sacctmgr=SACCTMGR))
    assert proc.returncode == 0, proc.stderr
    profile = home / ".config/snakemake/slurm/config.yaml"
    assert default_resources(profile) == {"slurm_partition": "'cpu'", "slurm_account": "'proj42'"}
    assert "partition cpu lists no GPUs" in proc.stdout and "partitions with GPUs: gpu" in proc.stdout
    # everything else is the repository's profile
    installed = yaml.safe_load(profile.read_text())
    assert {k: v for k, v in installed.items() if k != "default-resources"} == {
        k: v for k, v in yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text()).items()
        if k != "default-resources"}

    workdir = tmp_path / "wf"
    write_tiny_config(workdir, {"ma": Path("/nonexistent/ma")})
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    out = snakemake(workdir, "-n", "--profile", "slurm", env=env).stdout
    assert "slurm_partition=cpu" in out and "slurm_account=proj42" in out


def test_arguments_win_and_xdg_config_home_is_honoured(tmp_path):
    xdg = tmp_path / "xdg"
    proc = make_profile(tmp_path / "home", fake_commands(tmp_path, sinfo=SINFO, sacctmgr=SACCTMGR),
                        "PARTITION=gpu", "ACCOUNT=other_acc", xdg=xdg)
    assert proc.returncode == 0, proc.stderr
    assert default_resources(xdg / "snakemake/slurm/config.yaml") == {"slurm_partition": "'gpu'",
                                                                      "slurm_account": "'other_acc'"}
    assert "lists no GPUs" not in proc.stdout
    assert not (tmp_path / "home/.config").exists()


def test_without_accounting_the_account_is_left_out_and_a_hand_made_profile_is_kept(tmp_path):
    home = tmp_path / "home"
    own = home / ".config/snakemake/slurm/config.yaml"
    own.parent.mkdir(parents=True)
    own.write_text("executor: slurm\n")
    proc = make_profile(home, fake_commands(tmp_path, sinfo=SINFO, sacctmgr=NO_ACCOUNTING))
    assert proc.returncode == 0, proc.stderr
    assert default_resources(own) == {"slurm_partition": "'cpu'"}  # no -A: such clusters accept jobs without
    assert (own.parent / "config.yaml.bak").read_text() == "executor: slurm\n"
    proc = make_profile(home, fake_commands(tmp_path, sinfo=SINFO, sacctmgr=SACCTMGR))  # ours: replaced
    assert default_resources(own)["slurm_account"] == "'proj42'"
    assert (own.parent / "config.yaml.bak").read_text() == "executor: slurm\n"


@pytest.mark.parametrize("args, message", [
    ((), "no partition given and `sinfo` found none"),
    (("PARTITION=a;b",), "slurm_partition 'a;b': not a Slurm name"),
])
def test_errors_name_what_to_give(tmp_path, args, message):
    proc = make_profile(tmp_path / "home", None, *args)  # no sinfo on PATH: not a login node
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "home/.config/snakemake/slurm/config.yaml").exists()
