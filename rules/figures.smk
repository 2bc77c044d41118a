# The paper's figures (selectit.paper.figures): `snakemake figures/all` builds every one and the index
# figures/all. Each figure is a PDF + PNG + the plotted values as CSV, drawn only from pipeline outputs.
from selectit.paper import plan as paper_plan
from selectit.paper.figures import LENGTH_METHODS, caption_text

PAPER = paper_plan.settings(config)
PAPER_DATASET = PAPER["dataset"]
QUANTITY_RUNS = paper_plan.runs(config)["figure_quantity"]
TSNE = PAPER["tsne"]
CAPTIONS = f"{workflow.basedir}/report/figures"  # the report's captions, also written into figures/all
PAPER_PROPORTION = PAPER["proportion"]
# Canonical subset names (selectit.paper.plan.canonical), so the figures read the subsets the tables train on.
FIGURE_RANDOM_SUBSET = subset_path(
    PAPER_DATASET, *paper_plan.canonical("random", PAPER_PROPORTION, config)
)
FIGURE_SELECTIT_SUBSET = subset_path(
    PAPER_DATASET, *paper_plan.canonical("selectit", PAPER_PROPORTION, config)
)
FIGURE_LENGTH_SUBSETS = [
    subset_path(PAPER_DATASET, *paper_plan.canonical(m, PAPER_PROPORTION, config))
    for m in LENGTH_METHODS
]
FIGURE_TREND_SUBSETS = [
    subset_path(PAPER_DATASET, *paper_plan.canonical("selectit", q, config))
    for q in PAPER["trend_proportions"]
]
# (run, benchmark) of every evaluation the data-quantity figure reads, and the files, in the same order.
QUANTITY_KEYS = [
    {**run._asdict(), "benchmark": b}
    for run in QUANTITY_RUNS
    for b in EVALUATION["benchmarks"]
]
QUANTITY_EVALS = [
    layout.eval_result(*run, b)
    for run in QUANTITY_RUNS
    for b in EVALUATION["benchmarks"]
]

# data_quantity needs trained models: it is drawn when training.bases names a base.
FIGURES = ["data_quantity"] if QUANTITY_RUNS else []
FIGURES += [
    "length_and_calculation",
    "trends_vs_proportion",
    "tsne",
    "score_distributions",
]
FIGURES += ["audit"] if AUDIT_PLANS else []  # the selection audit, when audit.enabled


rule embed_samples:
    """Last-layer hidden states of a rater, mean-pooled over the text tokens of each sample (t-SNE)."""
    input:
        samples=layout.SAMPLES,
        model=layout.MODEL_INFO,
    output:
        embeddings=layout.EMBEDDINGS,
    log:
        "logs/embed_samples/{dataset}/{model}.log",
    benchmark:
        "benchmarks/embed_samples/{dataset}/{model}.tsv"
    conda:
        "../envs/rating.yaml"
    threads: config["rating"]["threads"]
    resources:
        gpu=lambda w: model_gpus(w.model),
    params:
        max_length=config["rating"]["max_length"],
        dtype=config["rating"]["dtype"],
        token_budget=config["rating"]["token_budget"],
    script:
        "../scripts/embed_samples.py"


# What each figure reads and the settings it is drawn with (selectit.paper.figure_registry draws it).
FIGURE_INPUTS = {
    "data_quantity": {"evals": QUANTITY_EVALS},
    "length_and_calculation": {"subsets": FIGURE_LENGTH_SUBSETS},
    "trends_vs_proportion": {"subsets": FIGURE_TREND_SUBSETS},
    "tsne": {
        "embeddings": layout.EMBEDDINGS.format(
            dataset=PAPER_DATASET, model=TSNE["model"]
        ),
        "random": FIGURE_RANDOM_SUBSET,
        "selectit": FIGURE_SELECTIT_SUBSET,
    },
    "score_distributions": {
        "samples": layout.SAMPLES.format(dataset=PAPER_DATASET),
        "scores": layout.FUSED.format(dataset=PAPER_DATASET),
        "selectit": FIGURE_SELECTIT_SUBSET,
    },
}
FIGURE_INPUTS["audit"] = {"metrics": SETTINGS.audit_targets()}
FIGURE_PARAMS = {
    "audit": {},
    "data_quantity": {"runs": QUANTITY_KEYS, "benchmarks": EVALUATION["benchmarks"]},
    "length_and_calculation": {
        "methods": LENGTH_METHODS,
        "dataset": PAPER_DATASET,
        "labels": {m: method_label(m) for m in LENGTH_METHODS},
    },
    "trends_vs_proportion": {
        "proportions": PAPER["trend_proportions"],
        "selected_proportion": PAPER["proportion"],
        "dataset": PAPER_DATASET,
    },
    "tsne": {"tsne": TSNE, "dataset": PAPER_DATASET},
    "score_distributions": {
        "proportion": PAPER["proportion"],
        "score_levels": config["score_levels"],
        "dataset": PAPER_DATASET,
        "labels": {m: method_label(m) for m in LEVELS},
    },
}


rule figure:
    """One figure of the paper (selectit.paper.figure_registry): figures/<name>.{pdf,png,csv}, the CSV holding
    the plotted values."""
    input:
        unpack(lambda w: FIGURE_INPUTS[w.figure]),
    output:
        pdf=layout.FIGURE.format(figure="{figure}", ext="pdf"),
        png=report(
            layout.FIGURE.format(figure="{figure}", ext="png"),
            caption="../report/figures/caption.rst",
            category="Figures",
        ),
        csv=layout.FIGURE.format(figure="{figure}", ext="csv"),
    log:
        "logs/figure/{figure}.log",
    benchmark:
        "benchmarks/figure/{figure}.tsv"
    wildcard_constraints:
        figure="|".join(FIGURE_INPUTS),
    conda:
        "../envs/figures.yaml"
    params:
        settings=lambda w: FIGURE_PARAMS[w.figure],
        caption=lambda w: Path(f"{CAPTIONS}/{w.figure}.rst").read_text(),
    script:
        "../scripts/figure.py"


rule figure_index:
    """figures/all: every figure with its caption and the pipeline outputs it was drawn from."""
    input:
        figures=expand(layout.FIGURE, figure=FIGURES, ext=["pdf", "png", "csv"]),
    output:
        index="figures/all",
    log:
        "logs/figure_index/index.log",
    benchmark:
        "benchmarks/figure_index/index.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        names=FIGURES,
        captions={name: caption_text(f"{CAPTIONS}/{name}.rst") for name in FIGURES},
        sources={
            name: [
                str(f)
                for v in FIGURE_INPUTS[name].values()
                for f in ([v] if isinstance(v, str) else v)
            ]
            for name in FIGURES
        },
    script:
        "../scripts/figure_index.py"
