"""The paper's figures, declared once: name -> a function of its loaded inputs and params that draws the
figure (PDF + PNG) and writes the plotted values (CSV). rules/figures.smk has one wildcard rule `figure` and
one script for all of them; each figure's inputs and params are declared there (FIGURE_INPUTS,
FIGURE_PARAMS), so an edit reruns exactly the figures that read it.

Adding a figure: its plotting in selectit.paper.figures, a function and an entry here, its inputs and params
in rules/figures.smk and a caption in report/figures/<name>.rst.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from selectit.audit import read_metrics
from selectit.embeddings import read_embeddings
from selectit.paper import figures

Draw = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, str]], pd.DataFrame]


def data_quantity(inputs, params, out) -> pd.DataFrame:
    evals = figures.read_eval_results(params["runs"], list(inputs["evals"]))
    points = figures.quantity_points(evals, params["benchmarks"])
    return figures.plot_data_quantity(points, out["pdf"], out["png"])


def length_and_calculation(inputs, params, out) -> pd.DataFrame:
    subsets = {m: figures.read_subset(path) for m, path in zip(params["methods"], inputs["subsets"], strict=True)}
    return figures.plot_length_and_calculation(figures.subset_statistics(subsets), out["pdf"], out["png"],
                                               title_suffix=f" ({params['dataset']})")


def trends_vs_proportion(inputs, params, out) -> pd.DataFrame:
    subsets = {q: figures.read_subset(path) for q, path in zip(params["proportions"], inputs["subsets"], strict=True)}
    return figures.plot_trends(figures.trend_statistics(subsets), out["pdf"], out["png"],
                               selected_proportion=params["selected_proportion"],
                               title_suffix=f" ({params['dataset']})")


def tsne(inputs, params, out) -> pd.DataFrame:
    groups = {"Random": figures.read_subset(inputs["random"])["id"],
              "SelectIT": figures.read_subset(inputs["selectit"])["id"]}
    settings = params["tsne"]
    points = figures.tsne_points(read_embeddings(inputs["embeddings"]), groups, n=settings["n"],
                                 perplexity=settings["perplexity"], seed=settings["seed"])
    plotted = figures.plot_tsne(points, out["pdf"], out["png"], model=settings["model"],
                                title_suffix=f"\n({params['dataset']})")
    return plotted.assign(perplexity=points.attrs["perplexity"])


def score_distributions(inputs, params, out) -> pd.DataFrame:
    samples = pd.read_parquet(inputs["samples"])
    scores = pd.read_parquet(inputs["scores"])
    levels = figures.score_levels(scores)
    records = None
    if figures.has_flaw_labels(samples):
        records = figures.flaw_records(samples, scores, list(figures.read_subset(inputs["selectit"])["id"]))
    figures.plot_score_distributions(levels, records, params["proportion"], out["pdf"], out["png"],
                                     score_levels_k=params["score_levels"], title_suffix=f" ({params['dataset']})")
    return figures.score_summary(levels, records, params["proportion"])


def audit(inputs, params, out) -> pd.DataFrame:
    return figures.plot_audit(read_metrics(list(inputs["metrics"])), out["pdf"], out["png"])


FIGURES: dict[str, Draw] = {
    "data_quantity": data_quantity,
    "length_and_calculation": length_and_calculation,
    "trends_vs_proportion": trends_vs_proportion,
    "tsne": tsne,
    "score_distributions": score_distributions,
    "audit": audit,
}


def draw(name: str, inputs: Mapping[str, Any], params: Mapping[str, Any], out: Mapping[str, str]) -> pd.DataFrame:
    """Draw one registered figure and write its CSV (the plotted values)."""
    plotted = FIGURES[name](inputs, params, out)
    figures.write_csv_atomic(plotted, out["csv"])
    return plotted
