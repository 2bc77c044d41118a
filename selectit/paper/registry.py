"""The paper's tables, declared once: name -> title, the paper settings it reads, and a function of its
loaded inputs and params (never the whole config). rules/tables.smk has one wildcard rule for all of them;
its params are what an entry declares, so editing a setting reruns exactly the tables that read it.

Adding a table: a function in selectit.paper.tables, an entry here, its inputs in rules/tables.smk
(TABLE_INPUTS) and a caption in report/tables/<name>.rst.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from selectit import audit
from selectit.paper import tables

# the paper settings every run-based table reads (which runs it shows)
RUN_KEYS = ("proportion", "dataset", "main_bases", "other_bases")


@dataclass(frozen=True)
class TableSpec:
    title: str
    make: Callable[[Mapping[str, Any], Mapping[str, Any]], pd.DataFrame]  # (inputs, params) -> table
    paper_keys: tuple[str, ...] = ()  # the paper settings it reads (its params' `view`)


def _view(function_name: str) -> Callable[[Mapping[str, Any], Mapping[str, Any]], pd.DataFrame]:
    """A table computed from the config view its params hold (the declared settings only)."""

    def make(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> pd.DataFrame:
        return getattr(tables, function_name)(params["view"])

    return make


def _table9(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> pd.DataFrame:
    extra = params["extra"]
    measured = tables.measured_efficiency(extra["expected"], extra["gpus"],
                                          tables.benchmarks_on_disk(extra["expected"], extra["skip"]),
                                          extra["model_gpus"])
    shards = list(inputs["rating_shards"])
    tokens = tables.mean_tokens_per_row(shards) if shards else None
    source = f"measured: mean n_tokens of this run's {len(shards)} rating shard files"
    planned = tables.planned_cost(inputs["planned_config"], tokens, tokens_source=source)
    return tables.table9_efficiency(measured, planned)


def _reported(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> pd.DataFrame:
    judge = list(inputs["judge"])
    return tables.reported_vs_reproduced({"full": inputs["full"], "selectit": inputs["selectit"],
                                          "judge": judge[0] if judge else None})


def _audit(inputs: Mapping[str, Any], params: Mapping[str, Any]) -> pd.DataFrame:
    return audit.summary(audit.read_metrics(list(inputs["metrics"])), params["extra"]["proportions"])


TABLES: dict[str, TableSpec] = {
    "table1": TableSpec("Table 1", _view("table1_main"), RUN_KEYS + ("methods",)),
    "table2": TableSpec("Table 2", _view("table2_k"), RUN_KEYS + ("k_values",)),
    "table3": TableSpec("Table 3", _view("table3_alpha"), RUN_KEYS + ("alphas",)),
    "table4": TableSpec("Table 4", _view("table4_levels"), ("proportion", "dataset")),
    "table6": TableSpec("Table 6", _view("table6_bases"), RUN_KEYS + ("other_methods",)),
    "table7": TableSpec("Table 7", _view("table7_datasets"), RUN_KEYS + ("other_methods",)),
    "table9": TableSpec("Table 9", _table9),
    "table10": TableSpec("Table 10", _view("table10_strategies"), RUN_KEYS + ("strategies",)),
    "reported_vs_reproduced": TableSpec("Reported vs reproduced", _reported),
    "audit": TableSpec("Selection audit", _audit),  # when audit.enabled (rules/tables.smk)
}


def view(config: Mapping[str, Any], paper: Mapping[str, Any], paper_keys: tuple[str, ...]) -> dict[str, Any]:
    """What a table function may read of the config: names of datasets, raters and bases, the seeds, the
    benchmarks, alpha and K (which name the canonical runs), and its own paper settings."""
    return {
        "datasets": {d: {} for d in config["datasets"]},
        "models": {m: {} for m in config["models"]},
        "training": {"bases": {b: {} for b in config["training"]["bases"]}, "seeds": config["training"]["seeds"]},
        "evaluation": {"benchmarks": config["evaluation"]["benchmarks"]},
        "scoring": {"alpha": config["scoring"]["alpha"]},
        "n_prompts": config["n_prompts"],
        "paper": {k: paper[k] for k in paper_keys},
    }
