"""The paper's figures, each drawn from pipeline outputs (evaluation JSONs, subsets, scores, embeddings).

Every figure has a function that computes what is plotted (a DataFrame, also written as CSV beside the figure)
and a ``plot_*`` function that draws it with seaborn, saves PDF + PNG atomically and returns the plotted frame:

- ``data_quantity``: Δ Overall vs the full data (percentage points) of models trained on the top share of the
  SelectIT-sorted data, one line per base model;
- ``length_and_calculation``: average length and share of calculation instructions (selectit.paper.stats) of
  the full data and selected subsets, with the paper's reported Alpaca-GPT4 values as hollow markers;
- ``trends_vs_proportion``: the same two statistics for the top p of the SelectIT-sorted data, against p;
- ``tsne``: t-SNE of mean-pooled last-layer embeddings (selectit.embeddings) of a random and the SelectIT subset;
- ``score_distributions``: the distribution of every level of score, and SelectIT scores of flawed vs clean
  records with the share of flawed records the selection removes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectit.atomic import atomic_path, write_text_atomic
from selectit.audit import KIND_ORDER
from selectit.errors import InputError
from selectit.methods import KINDS, LEVELS, label
from selectit.paper import results, stats

# The paper's reported statistics of Alpaca-GPT4 (its analysis section): full data, AlpaGasus, Selective Alpaca.
PAPER_REPORTED = {
    "full": {"mean_length": 176.09, "calculation_share": 4.34},
    "judge": {"mean_length": 208.27, "calculation_share": 1.83},
    "selectit": {"mean_length": 241.85, "calculation_share": 8.55},
}
PAPER_LABEL = "paper (Alpaca-GPT4)"
LENGTH_METHODS = ["full", "judge", "selectit"]  # the length and calculation figure: full, AlpaGasus-style, SelectIT
LEVEL_LABELS = {level: KINDS[level].label for level in LEVELS}
LENGTH_LABEL = "Average length (words)"  # instruction (with input) + response, see selectit.paper.stats
CALCULATION_LABEL = "Calculation instructions (% of records)"
DPI = 150


method_label = label  # the one labeller of selection methods (selectit.methods)


# ----------------------------------------------------------------------------------------------- reading


def read_subset(path: str | Path) -> pd.DataFrame:
    """A subset JSON written by selectit.selection as a table: id, instruction, response (in file order)."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the subset ({exc})") from exc
    if not isinstance(records, list):
        raise InputError(f"{path}: a subset is a JSON list of records, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"{path}: record {i} is not an object")
        for key in ("id", "instruction", "output"):
            if not isinstance(record.get(key), str):
                raise InputError(f"{path}: record {i} has no text {key!r}")
    return pd.DataFrame({"id": [r["id"] for r in records], "instruction": [r["instruction"] for r in records],
                         "response": [r["output"] for r in records]})


def read_eval_results(runs: Sequence[Mapping[str, Any]], paths: Sequence[str | Path]) -> pd.DataFrame:
    """One row per evaluation JSON: the run's keys (base, dataset, method, proportion, seed, benchmark) + value."""
    if len(runs) != len(paths):
        raise InputError(f"{len(runs)} runs but {len(paths)} evaluation files")
    rows = [{**run, "value": results.read_metric(path), "path": str(path)} for run, path in zip(runs, paths)]
    return pd.DataFrame(rows, columns=["base", "dataset", "method", "proportion", "seed", "benchmark", "value",
                                       "path"])


# ------------------------------------------------------------------------------------------------ saving


def write_csv_atomic(frame: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def save_figure(fig: Any, pdf_path: str | Path, png_path: str | Path) -> None:
    """PDF and PNG, each written under a temporary name and renamed."""
    for path, fmt in ((pdf_path, "pdf"), (png_path, "png")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, bbox_inches="tight")


def _figure(ncols: int, width: float, height: float = 4.6) -> tuple[Any, Any]:
    """A matplotlib Figure (no pyplot, so no GUI backend) with ncols axes, in the caller's seaborn style."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _styled(draw):
    """Run a drawing function inside seaborn's notebook context (font sizes) and whitegrid style."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import seaborn as sns

        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
            return draw(*args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------------- 1. data quantity


def quantity_points(evals: pd.DataFrame, benchmarks: Sequence[str]) -> pd.DataFrame:
    """Overall (selectit.paper.results.overall over `benchmarks`) per run, mean over seeds, and its difference
    to the same base's full-data run in percentage points: base, method, proportion, n_seeds, overall,
    overall_full, delta_pp."""
    if evals.empty:
        raise InputError("the data-quantity figure has no evaluation results (no training base configured?)")
    keys = ["base", "dataset", "method", "proportion"]
    per_seed = []
    for (*key, seed), group in evals.groupby([*keys, "seed"], sort=True):
        values = dict(zip(group["benchmark"], group["value"]))
        missing = sorted(set(benchmarks) - set(values))
        if missing:
            raise InputError(f"run {dict(zip([*keys, 'seed'], [*key, seed]))}: no evaluation for {missing}")
        per_seed.append({**dict(zip(keys, key)), "seed": seed,
                         "overall": results.overall({b: values[b] for b in benchmarks})})
    per_seed = pd.DataFrame(per_seed)
    points = per_seed.groupby(keys, sort=True).agg(n_seeds=("seed", "nunique"), overall=("overall", "mean"))
    points = points.reset_index()
    full = points[points["method"] == "full"].set_index("base")["overall"]
    missing_full = sorted(set(points["base"]) - set(full.index))
    if missing_full:
        raise InputError(f"bases {missing_full} have no full-data run to compare with")
    points["overall_full"] = points["base"].map(full)
    points["delta_pp"] = points["overall"] - points["overall_full"]
    return points.sort_values(["base", "proportion"]).reset_index(drop=True)


@_styled
def plot_data_quantity(points: pd.DataFrame, pdf_path: str | Path, png_path: str | Path) -> pd.DataFrame:
    """Δ Overall vs full (pp) against the share of SelectIT-sorted data, one line per base."""
    import seaborn as sns

    plotted = points.assign(percent=100 * points["proportion"])
    fig, (ax,) = _figure(1, 7.5)
    ax.axhline(0, color="0.4", linewidth=1, linestyle="--", label="full data")
    sns.lineplot(data=plotted, x="percent", y="delta_pp", hue="base", style="base", markers=True, dashes=False,
                 markersize=8, ax=ax)
    ax.set_xlabel("Share of the SelectIT-sorted data used for training (%)")
    ax.set_ylabel("Δ Overall vs full data (percentage points)")
    ax.set_xticks(sorted(plotted["percent"].unique()))
    ax.legend(title="base model")
    seeds = ", ".join(str(n) for n in sorted(plotted["n_seeds"].unique()))
    fig.suptitle(f"Effect of data quantity (mean over {seeds} seed(s))")
    save_figure(fig, pdf_path, png_path)
    return plotted


# ------------------------------------------------------------------------- 2./3. length and calculation


def subset_statistics(subsets: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per subset (method name -> table with instruction and response): n, mean_length (words),
    calculation_share (percent), by the definitions in selectit.paper.stats."""
    rows = []
    for method, table in subsets.items():
        if table.empty:
            raise InputError(f"subset {method!r} is empty")
        rows.append({"method": method, "label": method_label(method), "n": len(table),
                     "mean_length": stats.mean_length(table["instruction"], table["response"]),
                     "calculation_share": stats.calculation_share(table["instruction"])})
    return pd.DataFrame(rows)


@_styled
def plot_length_and_calculation(statistics: pd.DataFrame, pdf_path: str | Path, png_path: str | Path,
                                reported: Mapping[str, Mapping[str, float]] | None = None,
                                title_suffix: str = "") -> pd.DataFrame:
    """Two bar panels (average length, calculation share) over the subsets; the paper's reported values of the
    same methods as hollow markers. Returns the plotted frame (with paper_* columns, NaN where unreported)."""
    import seaborn as sns

    reported = PAPER_REPORTED if reported is None else reported
    plotted = statistics.copy()
    for column in ("mean_length", "calculation_share"):
        plotted[f"paper_{column}"] = [reported.get(m, {}).get(column, np.nan) for m in plotted["method"]]
    fig, axes = _figure(2, 11.5)
    order = list(plotted["label"])
    panels = (("mean_length", LENGTH_LABEL, "{:.1f}"), ("calculation_share", CALCULATION_LABEL, "{:.1f} %"))
    for ax, (column, ylabel, fmt) in zip(axes, panels):
        sns.barplot(data=plotted, x="label", y=column, hue="label", order=order, hue_order=order, legend=False,
                    palette="deep", ax=ax)
        for container in ax.containers:
            ax.bar_label(container, labels=[fmt.format(v) for v in container.datavalues], padding=2)
        paper = plotted[f"paper_{column}"]
        known = paper.notna().to_numpy()
        if known.any():
            ax.scatter(np.arange(len(order))[known], paper[known], s=90, marker="D", facecolors="none",
                       edgecolors="black", linewidths=1.5, zorder=3, label=PAPER_LABEL)
            ax.legend(loc="upper left")
        ax.set_xlabel("")
        ax.set_ylabel(ylabel)
        top = np.nanmax(np.concatenate([plotted[column].to_numpy(), paper.to_numpy()]))
        ax.set_ylim(0, 1.18 * top if top > 0 else 1)
        ax.tick_params(axis="x", labelrotation=15)
    sizes = ", ".join(f"{label}: n = {n}" for label, n in zip(plotted["label"], plotted["n"]))
    fig.suptitle(f"Average length and share of calculation instructions{title_suffix}\n({sizes})")
    save_figure(fig, pdf_path, png_path)
    return plotted


def trend_statistics(subsets: Mapping[float, pd.DataFrame]) -> pd.DataFrame:
    """Per proportion p (-> the top p of the SelectIT-sorted data): n, mean_length, calculation_share."""
    rows = []
    for proportion, table in sorted(subsets.items()):
        if table.empty:
            raise InputError(f"the SelectIT subset at proportion {proportion} is empty")
        rows.append({"proportion": float(proportion), "n": len(table),
                     "mean_length": stats.mean_length(table["instruction"], table["response"]),
                     "calculation_share": stats.calculation_share(table["instruction"])})
    return pd.DataFrame(rows)


@_styled
def plot_trends(statistics: pd.DataFrame, pdf_path: str | Path, png_path: str | Path,
                selected_proportion: float | None = None, title_suffix: str = "") -> pd.DataFrame:
    """Calculation share and average length of the top p of the SelectIT-sorted data against p (two panels)."""
    import seaborn as sns

    plotted = statistics.assign(percent=100 * statistics["proportion"])
    full = plotted[plotted["proportion"] == 1.0]
    fig, axes = _figure(2, 11.5)
    for ax, column, ylabel, color in ((axes[0], "calculation_share", CALCULATION_LABEL, "C3"),
                                      (axes[1], "mean_length", LENGTH_LABEL, "C0")):
        sns.lineplot(data=plotted, x="percent", y=column, marker="o", markersize=7, color=color, ax=ax,
                     label="top p of SelectIT-sorted data")
        if not full.empty:
            ax.axhline(full[column].iloc[0], color="0.4", linestyle="--", linewidth=1, label="full data")
        if selected_proportion is not None:
            ax.axvline(100 * selected_proportion, color="0.6", linestyle=":", linewidth=1.5,
                       label=f"selected share ({100 * selected_proportion:g} %)")
        ax.set_xlabel("Top p of the SelectIT-sorted data (%)")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0, 102)
        ax.set_ylim(0, max(1.15 * float(plotted[column].max()), 1.0))
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"Calculation share and average length vs proportion of SelectIT-sorted data{title_suffix}")
    save_figure(fig, pdf_path, png_path)
    return plotted


# ---------------------------------------------------------------------------------------------- 4. t-SNE


def sample_ids(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """At most n of ids, drawn without replacement with the seed (all of them, in order, if there are <= n)."""
    ids = list(ids)
    if len(ids) <= n:
        return ids
    rng = np.random.default_rng(seed)
    return [ids[i] for i in np.sort(rng.choice(len(ids), n, replace=False))]


def tsne_points(embeddings: pd.DataFrame, groups: Mapping[str, Sequence[str]], n: int, perplexity: float,
                seed: int) -> pd.DataFrame:
    """t-SNE (2-D, sklearn, fixed seed) of the embeddings of at most n samples per group; a sample in two groups
    is embedded once and shown in both. Columns: group, id, x, y; attrs['perplexity'] is the value used
    (lowered to (m - 1) / 3 for m < 3 * perplexity + 1 samples, since t-SNE needs perplexity < m)."""
    from sklearn.manifold import TSNE

    vectors = embeddings.set_index("id")["vector"]
    chosen = {group: sample_ids(ids, n, seed) for group, ids in groups.items()}
    for group, ids in chosen.items():
        missing = [i for i in ids if i not in vectors.index]
        if missing:
            raise InputError(f"group {group!r}: {len(missing)} samples have no embedding, e.g. {missing[:3]}")
    unique = list(dict.fromkeys(i for ids in chosen.values() for i in ids))
    if len(unique) < 4:
        raise InputError(f"t-SNE needs at least 4 samples, got {len(unique)}")
    matrix = np.stack([np.asarray(vectors[i], dtype=np.float32) for i in unique])
    used = float(min(perplexity, (len(unique) - 1) / 3))
    coords = TSNE(n_components=2, perplexity=used, random_state=seed, init="pca").fit_transform(matrix)
    where = {i: k for k, i in enumerate(unique)}
    rows = [{"group": group, "id": i, "x": float(coords[where[i], 0]), "y": float(coords[where[i], 1])}
            for group, ids in chosen.items() for i in ids]
    points = pd.DataFrame(rows)
    points.attrs["perplexity"] = used
    return points


@_styled
def plot_tsne(points: pd.DataFrame, pdf_path: str | Path, png_path: str | Path, model: str,
              title_suffix: str = "") -> pd.DataFrame:
    import seaborn as sns

    fig, (ax,) = _figure(1, 7.5, 6.2)
    sns.scatterplot(data=points, x="x", y="y", hue="group", style="group", s=40, alpha=0.75, ax=ax)
    ax.set_xlabel("t-SNE dimension 1")
    ax.set_ylabel("t-SNE dimension 2")
    counts = points["group"].value_counts()
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles, [f"{label} (n = {counts.get(label, 0)})" for label in labels], title="subset", loc="best")
    perplexity = points.attrs.get("perplexity")
    detail = f", perplexity {perplexity:g}" if perplexity is not None else ""
    fig.suptitle(f"t-SNE of last-layer mean-pooled embeddings ({model}{detail}){title_suffix}")
    save_figure(fig, pdf_path, png_path)
    return points


# ------------------------------------------------------------------------------- 5. score distributions


def score_levels(scores: pd.DataFrame) -> pd.DataFrame:
    """Every level of score of selectit.parquet in long form (level, score): token level per model (its prompts
    pooled), sentence level per model, Token-R, Sentence-R, Model-R, SelectIT."""
    missing = [c for c in LEVEL_LABELS if c not in scores.columns]
    if missing:
        raise InputError(f"the score table has no columns {missing}; rerun fuse_scores")
    models = [c.split("/", 1)[1] for c in scores.columns if c.startswith("sentence/")]
    parts = []
    for model in models:
        token_columns = [c for c in scores.columns if c.startswith(f"token/{model}/")]
        level = f"Token level ({model}, {len(token_columns)} prompts)"
        parts.append(pd.DataFrame({"level": level, "score": scores[token_columns].to_numpy().ravel()}))
    for model in models:
        parts.append(pd.DataFrame({"level": f"Sentence level ({model})", "score": scores[f"sentence/{model}"]}))
    for column, label in LEVEL_LABELS.items():
        parts.append(pd.DataFrame({"level": label, "score": scores[column]}))
    return pd.concat(parts, ignore_index=True)


def has_flaw_labels(samples: pd.DataFrame) -> bool:
    return "flaw" in samples.columns and samples["flaw"].notna().any()


def flaw_records(samples: pd.DataFrame, scores: pd.DataFrame, selected_ids: Sequence[str]) -> pd.DataFrame:
    """id, score (SelectIT), record ('flawed' where `flaw` is set, else 'clean'), selected (in selected_ids)."""
    if not has_flaw_labels(samples):
        raise InputError("the samples have no `flaw` labels")
    flaw = samples.set_index("id")["flaw"]
    unknown = [i for i in selected_ids if i not in flaw.index]
    if unknown:
        raise InputError(f"{len(unknown)} selected ids are not in the samples, e.g. {unknown[:3]}")
    missing = sorted(set(flaw.index) - set(scores["id"]))
    if missing:
        raise InputError(f"{len(missing)} samples have no score, e.g. {missing[:3]}; rerun fuse_scores")
    selected = set(selected_ids)
    flawed = scores["id"].map(flaw).notna() & (scores["id"].map(flaw).astype("string").str.strip() != "")
    return pd.DataFrame({"id": scores["id"], "score": scores["selectit"],
                         "record": np.where(flawed, "flawed", "clean"),
                         "selected": scores["id"].isin(selected).to_numpy()})


def flawed_removed_share(records: pd.DataFrame) -> float:
    """Percent of the flawed records that the selection leaves out."""
    flawed = records[records["record"] == "flawed"]
    if flawed.empty:
        raise InputError("no flawed records")
    return 100.0 * float((~flawed["selected"]).mean())


def score_summary(levels: pd.DataFrame, records: pd.DataFrame | None, proportion: float) -> pd.DataFrame:
    """What the score figure shows, as numbers: per level n, mean, std, min, quartiles, max; with flaw labels
    also SelectIT per record kind (flawed, clean) with n_selected and percent_left_out at `proportion`."""
    columns = {"count": "n", "25%": "q25", "50%": "median", "75%": "q75"}
    summary = levels.groupby("level", sort=False)["score"].describe().rename(columns=columns).reset_index()
    if records is None:
        return summary
    kinds = records.groupby("record", sort=True)["score"].describe().rename(columns=columns)
    selected = records.groupby("record", sort=True)["selected"]
    kinds["n_selected"] = selected.sum().astype(int)
    kinds["percent_left_out"] = 100 * (1 - selected.mean())
    kinds["proportion"] = proportion
    kinds.index = [f"SelectIT, {kind} records" for kind in kinds.index]
    return pd.concat([summary, kinds.rename_axis("level").reset_index()], ignore_index=True)


@_styled
def plot_score_distributions(levels: pd.DataFrame, records: pd.DataFrame | None, proportion: float,
                             pdf_path: str | Path, png_path: str | Path, score_levels_k: int | None = None,
                             title_suffix: str = "") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Violins of every level; with flaw labels, a second panel: SelectIT score histograms of flawed vs clean
    records, the selection cut-off at `proportion` and the share of flawed records it removes."""
    import seaborn as sns

    scale = f" (0 to {score_levels_k})" if score_levels_k else ""
    fig, axes = _figure(2 if records is not None else 1, 14 if records is not None else 7.5, 5.4)
    sns.violinplot(data=levels, x="score", y="level", hue="level", legend=False, orient="h", cut=0,
                   inner="quartile", density_norm="width", palette="deep", ax=axes[0])
    axes[0].set_xlabel(f"Score{scale}")
    axes[0].set_ylabel("")
    axes[0].set_title("Every level of score")
    if records is not None:
        ax = axes[1]
        sns.histplot(data=records, x="score", hue="record", hue_order=["clean", "flawed"], stat="percent",
                     common_norm=False, bins=30, element="step", palette={"clean": "C0", "flawed": "C3"}, ax=ax)
        selected = records[records["selected"]]
        cut_note = ""
        if not selected.empty:
            ax.axvline(float(selected["score"].min()), color="black", linestyle="--", linewidth=1.2)
            cut_note = f"\ndashed line: lowest kept score (top {100 * proportion:g} %)"
        removed = flawed_removed_share(records)
        n_flawed = int((records["record"] == "flawed").sum())
        ax.text(0.98, 0.97, f"{n_flawed} flawed of {len(records)} records\n"
                f"flawed removed at top {100 * proportion:g} %: {removed:.1f} %\n"
                f"(a random subset removes {100 * (1 - proportion):.0f} % on average){cut_note}",
                transform=ax.transAxes, ha="right", va="top", fontsize="small",
                bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
        ax.set_xlabel(f"SelectIT score{scale}")
        ax.set_ylabel("Records (% of their kind)")
        ax.set_title("SelectIT score of flawed vs clean records")
    fig.suptitle(f"Score distributions per level{title_suffix}")
    save_figure(fig, pdf_path, png_path)
    return levels, records


# -------------------------------------------------------------------------------------- 6. selection audit


@_styled
def plot_audit(metrics: pd.DataFrame, pdf_path: str | Path, png_path: str | Path) -> pd.DataFrame:
    """AUROC of every scorer (rows) per corruption or flaw kind (columns), a panel per (dataset, reference);
    0.5 is chance, degenerate scorers are marked with an asterisk."""
    import seaborn as sns  # heavy: imports matplotlib

    panels = list(metrics.groupby(["dataset", "reference"], sort=False))
    fig, axes = _figure(len(panels), 6.2 * len(panels) + 1, 0.42 * metrics["scorer"].nunique() + 2.2)
    plotted = []
    for ax, ((dataset, reference), part) in zip(axes, panels):
        kinds = [k for k in dict.fromkeys([*KIND_ORDER, *part["kind"]]) if k in set(part["kind"])]
        rows = list(dict.fromkeys(part["label"]))
        grid = part.pivot_table(index="label", columns="kind", values="auroc", aggfunc="first").reindex(
            index=rows, columns=kinds)
        flagged = part[part["kind"] == "all"].set_index("label")["degenerate"].fillna("").astype(bool)
        grid.index = [f"{r} *" if flagged.get(r, False) else r for r in rows]
        sns.heatmap(grid, vmin=0, vmax=1, center=0.5, cmap="RdBu", annot=True, fmt=".2f", cbar=ax is axes[-1],
                    cbar_kws={"label": "AUROC (good above bad)"}, linewidths=0.5, ax=ax)
        ax.set_title(f"{dataset}: against {reference}")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.set_xticks(ax.get_xticks(), [t.get_text() for t in ax.get_xticklabels()], rotation=35, ha="right",
                      rotation_mode="anchor")
        plotted.append(part[["dataset", "reference", "scorer", "label", "kind", "n_good", "n_bad", "auroc",
                             "win_rate", "degenerate"]])
    fig.suptitle("Selection audit: AUROC per scorer and kind (0.5 = chance; * degenerate)")
    save_figure(fig, pdf_path, png_path)
    return pd.concat(plotted, ignore_index=True)


# ------------------------------------------------------------------------------------------------ index


def caption_text(path: str | Path) -> str:
    """A report caption (.rst) as one paragraph of plain text."""
    return " ".join(Path(path).read_text(encoding="utf-8").split())


def write_index(entries: Sequence[Mapping[str, Any]], out_path: str | Path) -> str:
    """The `figures/all` index: per figure its files, caption and the pipeline outputs it was drawn from.
    Each entry: name, files (list), caption (text), sources (list of paths)."""
    lines = ["# Figures", "", "Regenerate with `snakemake figures/all`; every value is read from the files under "
             "*sources*.", ""]
    for entry in entries:
        lines += [f"## {entry['name']}", "", entry["caption"], "",
                  "Files: " + ", ".join(f"`{f}`" for f in entry["files"]), "", "Sources:", ""]
        lines += [f"- `{s}`" for s in entry["sources"]] + [""]
    text = "\n".join(lines)
    write_text_atomic(out_path, text)
    return text
