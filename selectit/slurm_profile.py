"""Install profiles/slurm as the user's Snakemake profile ``slurm``, with the cluster's partition and account.

``snakemake --profile slurm`` looks for a folder ``slurm`` in the current folder and then in Snakemake's user
config folder (``$XDG_CONFIG_HOME/snakemake``, else ``~/.config/snakemake``). ``make slurm-profile`` runs this
module once per user and cluster::

    python -m selectit.slurm_profile [--partition P] [--account A]

A partition not given is the cluster's default partition (``sinfo``: the one marked ``*``); an account not given
is the user's default account (``sacctmgr show user``), else the only account the user has an association
with. Without accounting (no slurmdbd, ``sacctmgr`` fails) the account is left out: the Slurm plugin then
submits without ``-A``, which such clusters accept. Only the standard library is used, so the system Python of
a login node runs it too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

SOURCE = Path(__file__).resolve().parents[1] / "profiles" / "slurm"
PROFILE_FILE = "config.yaml"
MARKER = "# Installed by `make slurm-profile`"
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
# the two lines of profiles/slurm/config.yaml that are filled in (inside `default-resources:`)
_LINE = {key: re.compile(rf"^(?P<indent>\s+){key}:.*$", re.M) for key in ("slurm_partition", "slurm_account")}

Runner = Callable[[Sequence[str]], Optional[str]]


class ProfileError(Exception):
    """A problem the user fixes (no partition found, a bad name, a changed template)."""


def run_command(cmd: Sequence[str]) -> Optional[str]:
    """stdout of a command, or None when it is missing, fails or hangs."""
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def user_profile_dir(env: Optional[dict] = None) -> Path:
    """Where Snakemake looks for a profile named `slurm` (its user config folder, as platformdirs gives it)."""
    env = os.environ if env is None else env
    base = (env.get("XDG_CONFIG_HOME") or "").strip() or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "snakemake" / "slurm"


def partitions(run: Runner = run_command) -> tuple[Optional[str], dict[str, str]]:
    """The default partition (None: sinfo gave none) and every partition's gres (e.g. 'gpu:4', '(null)')."""
    out = run(["sinfo", "-h", "-o", "%P %G"])
    if not out:
        return None, {}
    default, gres = None, {}
    for line in out.splitlines():
        fields = line.split()
        if not fields:
            continue
        name = fields[0]
        if name.endswith("*"):
            name = name[:-1]
            default = default or name
        gres[name] = gres.get(name, "") + ("," if name in gres else "") + (fields[1] if len(fields) > 1 else "")
    return default or next(iter(gres), None), gres


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER / LOGNAME
        return str(os.getuid())


def default_account(user: str, run: Runner = run_command) -> Optional[str]:
    """The user's default account, else their only associated account; None without accounting."""
    out = run(["sacctmgr", "-n", "-P", "show", "user", user, "format=defaultaccount"])
    names = [line.strip() for line in (out or "").splitlines() if line.strip()]
    if names:
        return names[0]
    out = run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=account"])
    accounts = sorted({line.strip() for line in (out or "").splitlines() if line.strip()})
    return accounts[0] if len(accounts) == 1 else None


def render(template: str, partition: str, account: Optional[str], origin: dict[str, str]) -> str:
    """The profile text with the partition and account filled in (account None: its line commented out)."""
    for key, value in (("slurm_partition", partition), ("slurm_account", account)):
        if value is not None and not _NAME.match(value):
            raise ProfileError(f"{key} {value!r}: not a Slurm name (letters, digits, _ . + -)")
        if len(_LINE[key].findall(template)) != 1:
            raise ProfileError(f"{SOURCE / PROFILE_FILE}: expected one '{key}:' line under default-resources")
    text = _LINE["slurm_partition"].sub(
        lambda m: f"{m['indent']}slurm_partition: \"'{partition}'\"  # sbatch -p ({origin['partition']})", template)
    if account is None:
        line = (lambda m: f"{m['indent']}# slurm_account: none found ({origin['account']}); "
                "add \"'<account>'\" if your cluster needs sbatch -A")
    else:
        line = lambda m: f"{m['indent']}slurm_account: \"'{account}'\"  # sbatch -A ({origin['account']})"
    text = _LINE["slurm_account"].sub(line, text)
    header = (f"{MARKER} from {SOURCE / PROFILE_FILE}; run it again to change the partition or account.\n")
    return header + text


def install(partition: Optional[str] = None, account: Optional[str] = None, dest: Optional[Path] = None,
            source: Path = SOURCE, run: Runner = run_command, user: Optional[str] = None,
            say: Callable[[str], None] = print) -> Path:
    """Write the profile into dest (default: Snakemake's user profile folder `slurm`); returns its config file."""
    dest = Path(dest) if dest else user_profile_dir()
    origin = {"partition": "given", "account": "given"}
    default, gres = partitions(run)
    if not partition:
        if default is None:
            raise ProfileError("no partition given and `sinfo` found none (not on a Slurm login node?): "
                               "make slurm-profile PARTITION=<partition> [ACCOUNT=<account>]")
        partition, origin["partition"] = default, "the default partition in sinfo"
    if not account:
        account = default_account(user or _user(), run)
        origin["account"] = ("the default account in sacctmgr" if account else
                             "sacctmgr lists no account for this user: a cluster without accounting?")
    text = render((source / PROFILE_FILE).read_text(), partition, account, origin)
    dest.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():  # any other file of the profile, as it is
        if item.is_file() and item.name != PROFILE_FILE:
            shutil.copy2(item, dest / item.name)
    target = dest / PROFILE_FILE
    if target.exists() and not target.read_text().startswith(MARKER) and target.read_text() != text:
        backup = target.with_name(PROFILE_FILE + ".bak")
        target.replace(backup)
        say(f"kept the profile that was there as {backup}")
    tmp = target.with_name(f".{PROFILE_FILE}.{os.getpid()}.partial")
    tmp.write_text(text)
    tmp.replace(target)
    say(f"installed {target}: partition {partition} ({origin['partition']}), "
        f"account {account or 'none'} ({origin['account']})")
    gpu = sorted(p for p, g in gres.items() if "gpu" in g)
    if gres and partition not in gpu:
        say(f"note: partition {partition} lists no GPUs, which the rating jobs need"
            + (f"; partitions with GPUs: {', '.join(gpu)}" if gpu else "")
            + ": make slurm-profile PARTITION=<one of them>")
    say("now: snakemake --profile slurm [--configfile configs/paper.yaml]")
    return target


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selectit.slurm_profile", description=__doc__.split("\n")[0])
    parser.add_argument("--partition", default="", help="sbatch -p (default: the default partition in sinfo)")
    parser.add_argument("--account", default="", help="sbatch -A (default: the default account in sacctmgr)")
    parser.add_argument("--dest", type=Path, default=None, help=f"profile folder (default: {user_profile_dir()})")
    args = parser.parse_args(argv)
    try:
        install(args.partition.strip() or None, args.account.strip() or None, args.dest)
    except (ProfileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
