"""Time the dry run of the paper's whole DAG (a benchmark, not a test; issue target: under 15 s).

Runs `snakemake -n tables/all figures/all --configfile configs/paper.yaml` in an empty folder holding only a
link to the repository's configs/ (as a fresh checkout: no data, models or prompt file), --repeat times, and
prints the wall time of each run and the jobs per rule of the last.

  python benchmarks/paper_dag.py [--repeat 3] [--targets tables/all figures/all] [--out f.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--targets", nargs="*", default=["tables/all", "figures/all"])
    ap.add_argument("--configfile", default="configs/paper.yaml")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    snakemake = str(Path(sys.executable).parent / "snakemake")
    seconds, counts = [], {}
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "configs").symlink_to(REPO / "configs")
            start = time.perf_counter()
            proc = subprocess.run([snakemake, *args.targets, "-n", "--configfile", args.configfile, "--directory", d,
                                   "--snakefile", str(REPO / "Snakefile"), "--quiet", "rules"],
                                  cwd=REPO, capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"dry run failed:\n{proc.stderr[-3000:]}")
        stats = proc.stdout.split("Job stats:", 1)[1]
        counts = {line.split()[0]: int(line.split()[1]) for line in stats.splitlines()[3:]
                  if len(line.split()) == 2 and line.split()[1].isdigit()}
    for rule, n in counts.items():
        print(f"{rule:32s} {n:6d}")
    print(f"dry run of {' '.join(args.targets)} with {args.configfile}: "
          + ", ".join(f"{s:.1f} s" for s in seconds) + f" (target < 15 s; load {os.getloadavg()[0]:.1f})")
    if args.out:
        args.out.write_text(json.dumps({"seconds": seconds, "jobs_per_rule": counts, "targets": args.targets,
                                        "configfile": args.configfile, "load": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
