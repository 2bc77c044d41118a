import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import selectit
from selectit.errors import SelectITError
from selectit.smk import step
from selectit.training import cli_args, launch_command

with step(snakemake):
    p = snakemake.params
    settings = dict(p.settings)
    args = cli_args(snakemake.input.subset, Path(snakemake.input.base).parent,
                    Path(snakemake.output.result).parent, json.dumps(settings), p.seed)
    cmd = launch_command(settings, p.nproc, args + ["--nproc-per-node", str(p.nproc)])
    threads = str(max(1, snakemake.threads // p.nproc))  # per process; more threads than cores is far slower
    package_root = str(Path(selectit.__file__).resolve().parents[1])  # the child imports this selectit too
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "TOKENIZERS_PARALLELISM": "false"}
    print("launching:", shlex.join(cmd), flush=True)
    status = subprocess.run(cmd, stdout=sys.stdout, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if status:
        raise SelectITError(f"training exited with status {status}; see {snakemake.log[0]}")
