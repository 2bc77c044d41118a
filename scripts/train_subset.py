import json
import shlex
from pathlib import Path

from selectit.errors import SelectITError
from selectit.launch import child_env, run_launched
from selectit.smk import step
from selectit.training import cli_args, launch_command

with step(snakemake):
    p = snakemake.params
    settings = dict(p.settings)
    args = cli_args(snakemake.input.subset, Path(snakemake.input.base).parent,
                    Path(snakemake.output.result).parent, json.dumps(settings), p.seed)
    cmd = launch_command(settings, p.nproc, args + ["--nproc-per-node", str(p.nproc)])
    env = child_env(snakemake.threads // p.nproc)  # the threads per process; the children import this selectit
    print("launching:", shlex.join(cmd), flush=True)
    status = run_launched(cmd, env)  # its output goes to the job's log
    if status:
        raise SelectITError(f"training exited with status {status}; see {snakemake.log[0]}")
