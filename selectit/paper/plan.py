"""Which fine-tuning runs each table and figure needs, from the config's ``paper`` section.

A run is (base, dataset, method, proportion, seed). Names are canonical, so one run serves every table that
shows it: ``full`` is always at proportion 1.0; ``selectit-k<K>`` with K = n_prompts and
``selectit-alpha<a>`` with a = scoring.alpha are plain ``selectit``; the data-quantity point 1.0 of the
SelectIT-sorted data is the full data.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from selectit import methods, schema
from selectit.errors import InputError

#: Table 2's K sweep where paper.k_values is unset: these K up to n_prompts, and n_prompts itself.
K_SWEEP = (1, 3, 5)


def _defaults() -> dict[str, Any]:
    """The ``paper`` section's defaults in the schema's order, read from the schema (their one home), its
    sub-sections' too; k_values (no schema default: derived from n_prompts) holds the sweep K_SWEEP."""
    out = {}
    for key, spec in schema.node("paper")["properties"].items():
        if key in ("tsne", "cost"):
            out[key] = schema.defaults("paper", key)
        else:
            out[key] = schema.default("paper", key) if "default" in spec else list(K_SWEEP)
    return out


#: The ``paper`` section's defaults (schemas/config.schema.yaml).
DEFAULTS: dict[str, Any] = _defaults()
# Table 9's planned cost of a rater rated tensor-parallel over N GPUs (selectit.models.parallel_mode): each GPU runs
# 1/N of the FLOPs at this share of the one-GPU throughput above, so its GPU-hours are FLOPs / (throughput x this).
# Source: Megatron-LM (Shoeybi et al. 2019, arXiv:1909.08053, Sec. 5.1 / Fig. 5): 8-way tensor (intra-layer model)
# parallelism in one DGX-2H node kept 77 % of linear scaling (weak scaling; 2- and 4-way kept more, so 77 % is the
# conservative figure for the 2-8 GPUs of a node). A layer split (accelerate) instead holds all N GPUs while one
# computes: N x FLOPs / throughput.
TENSOR_PARALLEL_EFFICIENCY = 0.77


class Run(NamedTuple):
    base: str
    dataset: str
    method: str
    proportion: float
    seed: int


def settings(config: dict) -> dict[str, Any]:
    """The ``paper`` section with defaults filled in and names checked against the rest of the config."""
    paper = {**DEFAULTS, **(config.get("paper") or {})}
    paper["tsne"] = {**DEFAULTS["tsne"], **(paper.get("tsne") or {})}
    paper["cost"] = {**DEFAULTS["cost"], **(paper.get("cost") or {})}
    for key, section in (("paper.cost", paper["cost"]), ("paper", paper)):
        known = schema.node(*key.split("."))["properties"]
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise InputError(f"config {key}: unknown keys {unknown}; known: {sorted(known)}")
    bases = list((config.get("training") or {}).get("bases") or {})
    if paper["main_bases"] is None:
        paper["main_bases"] = [b for b in bases if b not in paper["other_bases"]]
    for key in ("main_bases", "other_bases"):
        missing = [b for b in paper[key] if b not in bases]
        if missing:
            raise InputError(f"config paper.{key}: {missing} are not in training.bases {bases}")
    datasets = list(config["datasets"])
    if paper["dataset"] is None:
        paper["dataset"] = datasets[0]
    if paper["dataset"] not in datasets:
        raise InputError(f"config paper.dataset: {paper['dataset']!r} is not in datasets {datasets}")
    if paper["tsne"]["model"] is None:
        paper["tsne"]["model"] = schema.default_rater(config)
    if paper["tsne"]["model"] not in config["models"]:
        raise InputError(f"config paper.tsne.model: {paper['tsne']['model']!r} is not a rater in models")
    n_prompts = config.get("n_prompts", schema.default("n_prompts"))
    # the released variant replays K as the number of score classes too: no K = 1 (a division by zero there)
    released = (config.get("scoring") or {}).get("variant") == "released"
    low = 2 if released else 1
    if "k_values" not in (config.get("paper") or {}):  # the default sweep, cut to the prompts there are
        paper["k_values"] = sorted({k for k in K_SWEEP if low <= k <= n_prompts} | {n_prompts})
    bad_k = [k for k in paper["k_values"] if not 1 <= k <= n_prompts]
    if bad_k:
        raise InputError(f"config paper.k_values: {bad_k} outside 1..n_prompts ({n_prompts})")
    if released and 1 in paper["k_values"]:
        raise InputError("config paper.k_values: K = 1 under scoring.variant 'released', whose code divides by "
                         "K - 1 there (selectit.methods.resolve); drop 1, or use scoring.variant 'paper'")
    return paper


def canonical(method: str, proportion: float, config: dict) -> tuple[str, float]:
    """The one name under which a (method, proportion) pair is selected, trained and evaluated."""
    return methods.canonical(method, proportion, config)


def k_method(k: int) -> str:
    return methods.sweep_name("selectit", k=k)


def alpha_method(alpha: float) -> str:
    return methods.sweep_name("selectit", alpha=alpha)


def runs(config: dict) -> dict[str, list[Run]]:
    """Runs per table/figure key: table1, table2, table3, table6, table7, table10, figure_quantity."""
    paper = settings(config)
    seeds = (config.get("training") or {}).get("seeds") or [0]
    p, main = paper["proportion"], paper["dataset"]

    def grid(bases, datasets, pairs):
        out = []
        for b in bases:
            for d in datasets:
                for m, q in pairs:
                    m, q = canonical(m, q, config)
                    out += [Run(b, d, m, q, s) for s in seeds]
        return list(dict.fromkeys(out))

    mb = paper["main_bases"]
    other = paper["other_methods"]
    return {
        "table1": grid(mb, [main], [(m, p) for m in paper["methods"]]),
        "table2": grid(mb, [main], [(k_method(k), p) for k in paper["k_values"]]),
        "table3": grid(mb, [main], [(alpha_method(a), p) for a in paper["alphas"]]),
        "table6": grid(mb + paper["other_bases"], [main], [(m, p) for m in other]),
        "table7": grid(mb, list(config["datasets"]), [(m, p) for m in other]),
        "table10": grid(mb, [main], [(m, p) for m in paper["strategies"]]),
        "figure_quantity": grid(mb, [main], [("selectit", q) for q in paper["quantities"]] + [("full", 1.0)]),
    }


def all_runs(config: dict) -> list[Run]:
    out: list[Run] = []
    for rs in runs(config).values():
        out += rs
    return sorted(dict.fromkeys(out))


def subset_pairs(config: dict) -> list[tuple[str, str, float]]:
    """(dataset, method, proportion) of every subset the tables and figures read without training:
    Table 4's levels and the trend figures' proportions of the SelectIT-sorted data."""
    paper = settings(config)
    p, d = paper["proportion"], paper["dataset"]
    pairs = [canonical(m, p, config) for m in ("token_r", "sentence_r", "model_r", "selectit", "judge")]
    pairs += [canonical("selectit", q, config) for q in paper["trend_proportions"]]
    return sorted(dict.fromkeys((d, m, q) for m, q in pairs))
