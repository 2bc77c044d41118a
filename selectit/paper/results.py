"""Reading evaluation results for tables and figures: one metric value per (run, benchmark), Overall."""

from __future__ import annotations

import json
import math
from pathlib import Path

from selectit.errors import InputError
from selectit.evaluation import BENCHMARKS

# Read from the benchmark registry (selectit.evaluation.BENCHMARKS), whose order is the paper's column order.
BENCHMARK_ORDER = tuple(BENCHMARKS)
BENCHMARK_LABELS = {b.name: b.label for b in BENCHMARKS.values()}


def read_metric(path: str | Path) -> float:
    """The headline value (percent) of one evaluation JSON written by selectit.evaluation."""
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the evaluation result ({exc})") from exc
    value = result.get("value")
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{path}: `value` is {value!r}, not a finite number")
    return float(value)


def overall(values: dict[str, float]) -> float:
    """The paper's Overall column: the unweighted mean of the benchmark values (all in percent)."""
    if not values:
        raise InputError("Overall needs at least one benchmark value")
    return sum(values.values()) / len(values)
