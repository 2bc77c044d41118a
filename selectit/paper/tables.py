"""The paper's tables, computed from the pipeline's results files (never from numbers typed in here).

Each ``table*`` function returns a pandas DataFrame; ``write_table`` writes it as CSV (numbers), Markdown and
LaTeX (booktabs). Which runs a table shows comes from selectit.paper.plan; a run's value on a benchmark is the
``value`` of ``results/eval/{base}/{dataset}/{method}/{proportion}/seed{seed}/{benchmark}.json``.

Cells over seeds are mean ± sample standard deviation (ddof 1); with one seed the deviation is left blank.
The only numbers typed in are the paper's own, in ``PAPER_REPORTED`` and labelled as the paper's.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from selectit import cost, layout, schema
from selectit.atomic import write_text_atomic
from selectit.errors import InputError
from selectit.methods import KINDS, label
from selectit.paper import plan, stats
from selectit.paper.results import BENCHMARK_LABELS, BENCHMARK_ORDER, overall, read_metric
from selectit.paper.tabular import finish_table

OVERALL = "Overall"
METHOD_LABELS = {name: kind.label for name, kind in KINDS.items()}  # the registry's labels (selectit.methods)
STD_NOTE = ("Cells are mean ± sample standard deviation (ddof 1) over the training seeds {seeds}; "
            "with a single seed the deviation is left blank.")

# The paper's analysis of Selective Alpaca (Liu et al. 2024, arXiv 2402.16705, Sec. "Analysis"): average
# instruction length and share of calculation instructions of the full Alpaca-GPT4 data, the AlpaGasus
# selection and Selective Alpaca (SelectIT's selection). These are the paper's values, shown beside ours.
PAPER_REPORTED = {
    "full": {"length": 176.09, "calculation": 4.34},
    "judge": {"length": 208.27, "calculation": 1.83},
    "selectit": {"length": 241.85, "calculation": 8.55},
}


# --------------------------------------------------------------------------------------------- paths


def eval_path(run: plan.Run, benchmark: str, root: str | Path = ".") -> Path:
    """The evaluation JSON of one run on one benchmark (selectit.layout; runs are canonical: full is at 1.0)."""
    return Path(layout.eval_result(run.base, run.dataset, run.method, run.proportion, run.seed, benchmark, root))


def subset_file(dataset: str, method: str, proportion: float, root: str | Path = ".", suffix: str = ".json") -> Path:
    """A subset (suffix .json) or its manifest (suffix .manifest.json) (selectit.layout)."""
    return Path(layout.subset(dataset, method, proportion, root, suffix))


def read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc})") from exc


def read_manifest(path: str | Path) -> dict[str, Any]:
    manifest = read_json(path, "subset manifest")
    for key in ("n_total", "n_selected", "selected_ids"):
        if key not in manifest:
            raise InputError(f"{path}: the subset manifest has no {key!r}")
    return manifest


# ------------------------------------------------------------------------------------------- labels


method_label = label  # the one labeller of selection methods (selectit.methods)


def ordered_benchmarks(config: dict) -> list[str]:
    """The configured benchmarks in the paper's column order."""
    configured = (config.get("evaluation") or {}).get("benchmarks") or list(BENCHMARK_ORDER)
    unknown = [b for b in configured if b not in BENCHMARK_ORDER]
    if unknown:
        raise InputError(f"config evaluation.benchmarks: {unknown} have no table column")
    return [b for b in BENCHMARK_ORDER if b in configured]


def _seeds(config: dict) -> list[int]:
    return list((config.get("training") or {}).get("seeds") or [0])


# -------------------------------------------------------------------------------- reading eval values


def run_metrics(runs: Iterable[plan.Run], benchmarks: list[str], root: str | Path = ".") -> pd.DataFrame:
    """One row per (run, benchmark): base, dataset, method, proportion, seed, benchmark, value."""
    rows = [{**run._asdict(), "benchmark": b, "value": read_metric(eval_path(run, b, root))}
            for run in runs for b in benchmarks]
    return pd.DataFrame(rows, columns=[*plan.Run._fields, "benchmark", "value"])


def summarise(metrics: pd.DataFrame, keys: list[str], benchmarks: list[str]) -> pd.DataFrame:
    """Mean and std over seeds per group of ``keys``; columns (label, mean|std) per benchmark and Overall.

    Overall is computed per seed (the mean over benchmarks) and then summarised like a benchmark."""
    if metrics.empty:
        columns = pd.MultiIndex.from_product([[BENCHMARK_LABELS[b] for b in benchmarks] + [OVERALL],
                                              ["mean", "std"]])
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=keys), dtype=float)
    per_seed = metrics.set_index([*keys, "seed", "benchmark"])["value"].unstack("benchmark")[benchmarks]
    per_seed[OVERALL] = [overall(dict(zip(benchmarks, row))) for row in per_seed[benchmarks].to_numpy()]
    order = list(dict.fromkeys(map(tuple, metrics[keys].to_numpy())))
    grouped = per_seed.groupby(level=keys, sort=False)
    mean, std = grouped.mean(), grouped.std(ddof=1)
    columns = {}
    for b in [*benchmarks, OVERALL]:
        label = BENCHMARK_LABELS.get(b, b)
        columns[(label, "mean")] = mean[b]
        columns[(label, "std")] = std[b]
    out = pd.DataFrame(columns)
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    index = pd.MultiIndex.from_tuples(order, names=keys) if len(keys) > 1 else pd.Index(
        [o[0] for o in order], name=keys[0])
    return out.reindex(index)


def _relabel(frame: pd.DataFrame, names: dict[str, str], labels: Mapping[str, Mapping[Any, str]]) -> pd.DataFrame:
    """Readable index values (labels[level][value]) and level names."""
    index = frame.index.to_frame(index=False)
    for level, mapping in labels.items():
        index[level] = [mapping.get(v, v) if isinstance(mapping, Mapping) else mapping(v) for v in index[level]]
    index = index.rename(columns=names)
    frame = frame.copy()
    frame.index = pd.MultiIndex.from_frame(index) if index.shape[1] > 1 else pd.Index(index.iloc[:, 0])
    return frame


def _delta_vs_full(frame: pd.DataFrame, method_level: str) -> pd.DataFrame:
    """Add (Δ Overall vs Full) per group: mean Overall minus the Full-data row's mean Overall."""
    frame = frame.copy()
    overall_mean = frame[(OVERALL, "mean")]
    deltas = []
    for key in frame.index:
        row = dict(zip(frame.index.names, key))
        full_key = tuple("full" if n == method_level else row[n] for n in frame.index.names)
        deltas.append(overall_mean[key] - overall_mean[full_key] if full_key in frame.index else math.nan)
    frame[("Δ Overall vs Full", "")] = deltas
    return frame


def _metrics_table(config: dict, key: str, root: str | Path, keys: list[str]) -> pd.DataFrame:
    benchmarks = ordered_benchmarks(config)
    return summarise(run_metrics(plan.runs(config)[key], benchmarks, root), keys, benchmarks)


# ----------------------------------------------------------------------------------------- tables


def table1_main(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 1: every method of paper.methods on each main base, mean ± std over seeds."""
    frame = _metrics_table(config, "table1", root, ["base", "method"])
    frame = _relabel(frame, {"base": "Base", "method": "Method"}, {"method": method_label})
    p = plan.settings(config)
    return finish_table(frame, f"Main results: {p['proportion']:g} of {p['dataset']} selected by each method",
                   [STD_NOTE.format(seeds=_seeds(config)), "Overall is the unweighted mean of the benchmark columns."])


def _sweep_table(config: dict, root: str | Path, key: str, values: list, make_method, name: str) -> pd.DataFrame:
    p = plan.settings(config)
    value_of = {plan.canonical(make_method(v), p["proportion"], config)[0]: v for v in values}
    frame = _metrics_table(config, key, root, ["base", "method"])
    return _relabel(frame, {"base": "Base", "method": name}, {"method": value_of})


def table2_k(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 2: SelectIT with the first K rating prompts (the same rating shards, no re-rating)."""
    p = plan.settings(config)
    frame = _sweep_table(config, root, "table2", p["k_values"], plan.k_method, "K")
    return finish_table(frame, "Effect of K, the number of rating prompts",
                   [STD_NOTE.format(seeds=_seeds(config)),
                    f"K = {config.get('n_prompts', 5)} is the main SelectIT run (the same run as in Table 1)."])


def table3_alpha(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 3: SelectIT re-fused with each α of paper.alphas."""
    p = plan.settings(config)
    frame = _sweep_table(config, root, "table3", p["alphas"], plan.alpha_method, "α")
    frame.index = frame.index.set_levels([f"{a:g}" for a in frame.index.levels[1]], level=1)
    alpha = (config.get("scoring") or {}).get("alpha", schema.default("scoring", "alpha"))
    return finish_table(frame, "Effect of the uncertainty weight α (Eq. 4)",
                   [STD_NOTE.format(seeds=_seeds(config)), f"α = {alpha:g} is the main SelectIT run."])


def table6_bases(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 6: paper.other_methods on every main and other base."""
    frame = _delta_vs_full(_metrics_table(config, "table6", root, ["base", "method"]), "method")
    frame = _relabel(frame, {"base": "Base", "method": "Method"}, {"method": method_label})
    return finish_table(frame, "Other foundation models", [STD_NOTE.format(seeds=_seeds(config)),
                                                      "Δ compares mean Overall with the same base's Full data."])


def table7_datasets(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 7: paper.other_methods on every dataset, with its size before and after selection."""
    runs = plan.runs(config)["table7"]
    benchmarks = ordered_benchmarks(config)
    frame = summarise(run_metrics(runs, benchmarks, root), ["dataset", "base", "method"], benchmarks)
    proportion = {(r.dataset, r.method): r.proportion for r in runs}
    before, after = [], []
    for dataset, _, method in frame.index:
        manifest = read_manifest(subset_file(dataset, method, proportion[(dataset, method)], root,
                                             ".manifest.json"))
        before.append(manifest["n_total"])
        after.append(manifest["n_selected"])
    frame.insert(0, ("Size before", ""), before)
    frame.insert(1, ("Size after", ""), after)
    frame = _relabel(frame, {"dataset": "Dataset", "base": "Base", "method": "Method"}, {"method": method_label})
    return finish_table(frame, "Other instruction-tuning datasets",
                   [STD_NOTE.format(seeds=_seeds(config)),
                    "Sizes are records after validation (n_total) and selected (n_selected), from the subset "
                    "manifests."])


def table10_strategies(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 10: other selection strategies of paper.strategies, with Δ Overall vs Full."""
    frame = _delta_vs_full(_metrics_table(config, "table10", root, ["base", "method"]), "method")
    frame = _relabel(frame, {"base": "Base", "method": "Strategy"}, {"method": method_label})
    return finish_table(frame, "Other selection strategies", [STD_NOTE.format(seeds=_seeds(config)),
                                                         "Δ compares mean Overall with the same base's Full data."])


LEVELS = ("token_r", "sentence_r", "model_r")


def table4_levels(config: dict, root: str | Path = ".") -> pd.DataFrame:
    """Table 4: how the final SelectIT selection is made of the three levels' selections (no training)."""
    p = plan.settings(config)
    dataset, proportion = p["dataset"], p["proportion"]
    sets = {}
    for method in (*LEVELS, "selectit"):
        name, q = plan.canonical(method, proportion, config)
        sets[method] = set(read_manifest(subset_file(dataset, name, q, root, ".manifest.json"))["selected_ids"])
    return finish_table(level_overlaps(sets), f"Contribution of each level to SelectIT's selection ({dataset}, "
                   f"top {proportion:g})",
                   ["Shares are of the SelectIT selection; 'only' = selected by that level and by neither other one.",
                    "The last column compares the level selections themselves: the share of the first-named "
                    "level's selection that the row's sets have in common."])


def level_overlaps(sets: Mapping[str, set]) -> pd.DataFrame:
    """Rows: each level alone, each pair, all three, none; counts within the SelectIT selection."""
    final = sets["selectit"]
    if not final:
        raise InputError("the SelectIT selection is empty; Table 4 has nothing to divide")
    t, s, m = (sets[level] for level in LEVELS)
    label = {level: METHOD_LABELS[level] for level in LEVELS}
    rows = []

    def add(name, members, level_sets):
        first = level_sets[0] if level_sets else None
        common = set.intersection(*level_sets) if level_sets else set()
        rows.append({"Levels": name, "SelectIT samples": len(final & members),
                     "Share of SelectIT (%)": 100.0 * len(final & members) / len(final),
                     "Overlap of level selections (%)": 100.0 * len(common) / len(first) if first else math.nan})

    for level, a, (b, c) in ((LEVELS[0], t, (s, m)), (LEVELS[1], s, (t, m)), (LEVELS[2], m, (t, s))):
        only = a - b - c
        rows.append({"Levels": f"{label[level]} only", "SelectIT samples": len(final & only),
                     "Share of SelectIT (%)": 100.0 * len(final & only) / len(final),
                     "Overlap of level selections (%)": 100.0 * len(only) / len(a) if a else math.nan})
    for (la, a), (lb, b) in ((("token_r", t), ("sentence_r", s)), (("token_r", t), ("model_r", m)),
                             (("sentence_r", s), ("model_r", m))):
        add(f"{label[la]} ∩ {label[lb]}", a & b, [a, b])
    add("all three", t & s & m, [t, s, m])
    add("none of the levels", final - (t | s | m), [])
    return pd.DataFrame(rows).set_index("Levels")


# ------------------------------------------------------------------------------------ efficiency (9)


def read_benchmark_seconds(path: str | Path) -> float:
    """Wall seconds of one job from a Snakemake benchmark TSV (column ``s``; the mean over repeats)."""
    try:
        frame = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: cannot read the benchmark TSV ({exc})") from exc
    if "s" not in frame.columns or frame.empty:
        raise InputError(f"{path}: the benchmark TSV has no `s` column or no row")
    return float(pd.to_numeric(frame["s"], errors="raise").mean())


def job_gpus(path: str | Path, stage: str, declared: int | None,
             model_gpus: Mapping[str, int] | None) -> int | None:
    """GPUs of the job that wrote a benchmark TSV: the rule's declared count, or where the rule computes it per job
    (None: rate_shard, embed_samples take the model's ``gpus``) that of the model the path names
    (benchmarks/<rule>/<dataset>/<model>/... or .../<model>.tsv) in ``model_gpus``, 1 if absent there."""
    if declared is not None or model_gpus is None:
        return declared
    parts = Path(path).parts
    if stage not in parts or len(parts) <= parts.index(stage) + 2:
        return None
    model = parts[parts.index(stage) + 2].removesuffix(".tsv")
    return int(model_gpus.get(model, 1))


def measured_efficiency(expected: Mapping[str, list[str]], gpus_per_job: Mapping[str, int | None],
                        found_elsewhere: Mapping[str, list[str]] | None = None,
                        model_gpus: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Per stage (rule): jobs planned, benchmark files found, summed wall seconds and GPU-hours
    (= Σ s × the job's GPUs / 3600, see ``job_gpus``; 'GPUs per job' is their mean over the stage's jobs).
    ``found_elsewhere``: TSVs of other rules found under benchmarks/."""
    rows = []
    for source, groups in (("this DAG", expected), ("found on disk", found_elsewhere or {})):
        for stage, paths in groups.items():
            gpus = {p: job_gpus(p, stage, gpus_per_job.get(stage, 0), model_gpus) for p in paths}
            seconds = {p: read_benchmark_seconds(p) for p in paths if os.path.exists(p)}
            known = None not in gpus.values()
            rows.append({"Stage": stage, "Source": source, "Jobs": len(paths), "Files found": len(seconds),
                         "Wall time (s)": sum(seconds.values()),
                         "GPUs per job": sum(gpus.values()) / len(paths) if known and paths else math.nan,
                         "GPU-hours": sum(s * gpus[p] for p, s in seconds.items()) / 3600.0 if known else math.nan,
                         "Tokens": math.nan, "FLOPs": math.nan})
    return pd.DataFrame(rows)


def declared_gpus(rules: Iterable[Any]) -> dict[str, int | None]:
    """Each Snakemake rule's ``gpu`` resource: 0 when absent, None when it is computed per job."""
    out = {}
    for rule in rules:
        gpu = rule.resources["gpu"] if "gpu" in rule.resources else 0
        value = getattr(gpu, "raw", gpu)  # a snakemake Resource keeps the declared value in `raw`
        out[rule.name] = value if isinstance(value, int) and not isinstance(value, bool) else None
    return out


def benchmarks_on_disk(expected: Mapping[str, list[str]], skip: Iterable[str] = (),
                       root: str | Path = ".") -> dict[str, list[str]]:
    """Benchmark TSVs under benchmarks/<rule>/ of rules outside ``expected`` and ``skip`` (e.g. the baseline
    and figure rules), found at run time."""
    base = Path(root) / "benchmarks"
    ignore = set(expected) | set(skip)
    if not base.is_dir():
        return {}
    return {d.name: sorted(str(f) for f in d.rglob("*.tsv"))
            for d in sorted(base.iterdir()) if d.is_dir() and d.name not in ignore and any(d.rglob("*.tsv"))}


def mean_tokens_per_row(rating_files: Iterable[str | Path]) -> float:
    """Mean ``n_tokens`` (prompt + sample tokens of one rating forward pass) over rating shard files."""
    total, rows = 0, 0
    for path in rating_files:
        try:
            tokens = pd.read_parquet(path, columns=["n_tokens"])["n_tokens"]
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: cannot read n_tokens of the rating shard ({exc})") from exc
        total += int(tokens.sum())
        rows += len(tokens)
    if not rows:
        raise InputError("no rating rows to measure tokens per row from; set paper.cost.tokens_per_row")
    return total / rows


def planned_cost(planned_config_path: str | Path, tokens_per_row: float | None,
                 root: str | Path = ".", tokens_source: str = "measured") -> pd.DataFrame:
    """The planned GPU bill of another config (``paper.cost.config``) as Table 9's planned rows: every stage and job
    kind of ``selectit.cost.plan`` with Source "planned (<file>)". ``tokens_per_row``: measured on this run's rating
    shards (the config's own ``paper.cost.tokens_per_row`` wins)."""
    path = Path(planned_config_path)
    try:
        planned = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: cannot read the planned config ({exc})") from exc
    try:
        frame = cost.plan(planned, root, tokens_per_row, tokens_source)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    assumptions = frame.attrs["assumptions"]
    frame = frame.drop(columns=["stage_key", "Job kind"]).assign(**{"Source": f"planned ({path.name})",
                                                                   "Files found": math.nan,
                                                                   "Wall time (s)": math.nan})
    frame.attrs["assumptions"] = assumptions
    return frame


def table9_efficiency(measured: pd.DataFrame, planned: pd.DataFrame) -> pd.DataFrame:
    frame = pd.concat([measured, planned], ignore_index=True).set_index(["Stage", "Source"])
    for col in ("Jobs", "Files found", "GPUs per job"):
        if (frame[col].dropna() % 1 == 0).all():  # a mean of unequal GPU counts stays a fraction
            frame[col] = frame[col].astype("Int64")
    a = planned.attrs.get("assumptions", {})
    return finish_table(frame, "Efficiency: measured time per stage and the planned GPU bill", [
        "Measured rows sum the `s` column of the Snakemake benchmark TSVs (benchmarks/<rule>/...); GPU-hours = "
        "s × the job's GPUs / 3600 (the rule's `gpu` resource; for rating and embedding jobs the rater's "
        "`gpus`). 'Files found' < 'Jobs' means some jobs have no benchmark file.",
        f"Planned rows (selectit.cost, `snakemake plan`): rating tokens = records × {a.get('n_prompts')} prompts × "
        f"{a.get('tokens_per_row', 0):.1f} tokens per row ({a.get('tokens_source')}); a training example "
        f"{a.get('tokens_per_record', 0):g} tokens; FLOPs = 2 θ per token read or generated, 6 θ per trained token × "
        f"epochs; GPU-hours = FLOPs / ({a.get('peak_tflops', 0):g} TFLOP/s × MFU), the MFU per job kind "
        f"{a.get('mfu')}. Generation is planned at its budget (max_new_tokens for every row). 'GPU-hours (padded)': "
        "what the fine-tunes would cost with right-padded micro-batches. A rater on n GPUs (`gpus`) whose "
        "architecture has a tensor-parallel plan runs as n processes computing at once, at "
        f"{a.get('tensor_parallel_efficiency', 0):.0%} of linear scaling (Megatron-LM, Shoeybi et al. 2019, 8-way "
        "tensor parallelism): GPU-hours = FLOPs / (throughput × that); one without a plan is split by layers, one "
        "GPU computing at a time: n × FLOPs / throughput ('Parallel' says which).",
    ])


# --------------------------------------------------------------------------- reported vs reproduced


def reported_vs_reproduced(subsets: Mapping[str, str | Path | None]) -> pd.DataFrame:
    """The paper's average length and calculation share beside ours (selectit.paper.stats) for the full data,
    the judge (AlpaGasus-style) selection and SelectIT's; ``subsets`` maps full/judge/selectit to a subset JSON
    (None: not configured, shown blank)."""
    rows = []
    for method in ("full", "judge", "selectit"):
        path = subsets.get(method)
        ours_length = ours_calc = records = math.nan
        if path is not None:
            records_json = read_json(path, "subset")
            if not isinstance(records_json, list) or not all(
                    isinstance(r, dict) and "instruction" in r and "output" in r for r in records_json):
                raise InputError(f"{path}: a subset must be a list of records with instruction and output")
            instructions = [r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in records_json]
            ours_length = stats.mean_length(instructions, [r["output"] for r in records_json])
            ours_calc = stats.calculation_share(instructions)
            records = len(records_json)
        rows.append({"Data": METHOD_LABELS[method] if method != "selectit" else "SelectIT (Selective Alpaca)",
                     "Records (ours)": records,
                     "Average length (paper)": PAPER_REPORTED[method]["length"],
                     "Average length (ours)": ours_length,
                     "Calculation share % (paper)": PAPER_REPORTED[method]["calculation"],
                     "Calculation share % (ours)": ours_calc})
    frame = pd.DataFrame(rows).set_index("Data")
    frame["Records (ours)"] = frame["Records (ours)"].astype("Int64")
    return finish_table(frame, "Reported (Liu et al. 2024) vs reproduced data statistics", [
        "Paper values: Liu et al. 2024 (arXiv 2402.16705), analysis of Selective Alpaca on Alpaca-GPT4.",
        "Ours: length = words of instruction plus response; calculation = selectit.paper.stats.is_calculation. "
        "The paper does not define either, so the columns are comparable in trend, not exactly.",
        "A blank row: that selection is not configured (paper.methods lacks it).",
    ])


# ------------------------------------------------------------------------------------------ writing


def _fmt(value: Any) -> str:
    """Integers as they are, floats with 2 decimals (3 significant digits from a million on), missing blank."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        if math.isnan(value):
            return ""
        return f"{value:.3g}" if abs(value) >= 1e6 else f"{value:.2f}"
    return str(value)


def display_frame(frame: pd.DataFrame, pm: str = "±") -> pd.DataFrame:
    """Strings for Markdown/LaTeX: (label, mean) and (label, std) become one 'mean ± std' column."""
    flat = frame.reset_index()
    out = {}
    columns = list(flat.columns)
    for col in columns:
        top, stat = (col if isinstance(col, tuple) else (col, ""))
        if stat == "std":
            continue
        if stat == "mean":
            means, stds = flat[col], flat[(top, "std")]
            out[top] = [_fmt(m) + (f" {pm} {_fmt(s)}" if _fmt(s) and _fmt(m) else "") for m, s in zip(means, stds)]
        else:
            out[top] = [_fmt(v) for v in flat[col]]
    return pd.DataFrame(out)


def numeric_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """For CSV: the index as columns and (label, stat) column names flattened to 'label stat'."""
    flat = frame.reset_index()
    flat.columns = [" ".join(str(c) for c in col if c != "").strip() if isinstance(col, tuple) else col
                    for col in flat.columns]
    return flat


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "α": r"$\alpha$", "Δ": r"$\Delta$", "∩": r"$\cap$", "×": r"$\times$",
                  "θ": r"$\theta$", "<": r"$<$", ">": r"$>$"}


def latex_text(text: str) -> str:
    """Escape LaTeX specials, then write the few non-ASCII symbols the tables use as math."""
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))
    for symbol, latex in _LATEX_SYMBOLS.items():
        out = out.replace(symbol, latex)
    return out


def to_markdown(frame: pd.DataFrame, title: str | None = None) -> str:
    caption = frame.attrs.get("caption", "")
    lines = [f"### {title}: {caption}" if title else f"### {caption}", ""]
    shown = display_frame(frame)
    lines.append(shown.to_markdown(index=False, disable_numparse=True) if len(shown) else "(no rows)")
    lines.append("")
    lines += [f"- {note}" for note in frame.attrs.get("notes", [])]
    return "\n".join(lines) + "\n"


def to_latex(frame: pd.DataFrame, label: str) -> str:
    shown = display_frame(frame, pm="±")
    shown = shown.map(latex_text)
    shown.columns = [latex_text(c) for c in shown.columns]
    notes = " ".join(frame.attrs.get("notes", []))
    caption = frame.attrs.get("caption", "")
    styler = shown.style.hide(axis="index")
    return styler.to_latex(hrules=True, caption=latex_text(f"{caption}. {notes}".strip()), label=f"tab:{label}",
                           position_float="centering", column_format="l" * len(shown.columns))


def write_table(frame: pd.DataFrame, csv: str | Path, md: str | Path, tex: str | Path, title: str,
                caption: str | None = None) -> None:
    """CSV (numbers, flattened columns), Markdown (caption, table, notes; the report's caption text below
    them when given) and LaTeX (booktabs), atomically."""
    write_text_atomic(Path(csv), numeric_frame(frame).to_csv(index=False))
    write_text_atomic(Path(tex), to_latex(frame, Path(tex).stem))
    markdown = to_markdown(frame, title)
    if caption:
        markdown += "\n" + caption.strip() + "\n"
    write_text_atomic(Path(md), markdown)


def write_index(markdown_files: Mapping[str, str | Path], out: str | Path) -> None:
    """The Markdown index `tables/all`: every table's Markdown, in order."""
    parts = ["# Tables of the paper, regenerated\n"]
    start = Path(out).parent
    parts += [f"[{title}]({Path(os.path.relpath(path, start)).as_posix()})\n" for title, path in markdown_files.items()]
    for path in markdown_files.values():
        parts.append(Path(path).read_text(encoding="utf-8"))
    write_text_atomic(Path(out), "\n".join(parts))
