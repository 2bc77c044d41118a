"""Compare the outputs of two completed runs of the workflow (e.g. before and after a redesign) by sha256.

    python benchmarks/compare_runs.py RUN_BEFORE RUN_AFTER

Per kind of output (subsets, score tables, the data, audit metrics, tables, figures' plotted values): how many
files are byte-identical, which differ, which exist in one run only. Evaluation results are compared as JSON
without their wall-clock fields (`wall_seconds`, `timing`). Table 9 holds the runs' own measured times, so it
differs between any two runs; compare its planned rows by eye. Exit status 1 when anything else differs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

KINDS = {
    "subsets": "results/subsets/**/*.json",
    "score tables": "results/scores/**/*.parquet",
    "data": "results/data/**/*",
    "audit metrics": "results/audit/**/*.csv",
    "tables": "results/tables/*.csv",
    "figures' values": "figures/*.csv",
}
CLOCK_FIELDS = ("wall_seconds", "timing")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path, pattern: str) -> set[Path]:
    return {p.relative_to(root) for p in root.glob(pattern) if p.is_file()}


def compare(before: Path, after: Path) -> dict:
    report = {}
    for kind, pattern in KINDS.items():
        a, b = _files(before, pattern), _files(after, pattern)
        both = sorted(a & b)
        report[kind] = {"files": len(a | b),
                        "identical": sum(_sha(before / p) == _sha(after / p) for p in both),
                        "differ": [str(p) for p in both if _sha(before / p) != _sha(after / p)],
                        "only_before": sorted(map(str, a - b)), "only_after": sorted(map(str, b - a))}
    a, b = _files(before, "results/eval/**/*.json"), _files(after, "results/eval/**/*.json")
    differ = []
    for p in sorted(a & b):
        x, y = (json.loads((root / p).read_text()) for root in (before, after))
        x, y = ({k: v for k, v in d.items() if k not in CLOCK_FIELDS} for d in (x, y))
        if x != y:
            differ.append(str(p))
    report["evaluations (without clock fields)"] = {
        "files": len(a | b), "identical": len(a & b) - len(differ), "differ": differ,
        "only_before": sorted(map(str, a - b)), "only_after": sorted(map(str, b - a))}
    return report


if __name__ == "__main__":
    result = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(result, indent=1))
    bad = [k for k, v in result.items()
           if v["only_before"] or v["only_after"] or [f for f in v["differ"] if not f.endswith("table9.csv")]]
    sys.exit(1 if bad else 0)
