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
    f"{run_dir('eval', *run)}/{b}.json"
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


rule embed_samples:
    """Last-layer hidden states of a rater, mean-pooled over the text tokens of each sample (t-SNE)."""
    input:
        samples="results/data/{dataset}/samples.parquet",
        model="results/models/{model}/model.json",
    output:
        embeddings="results/embeddings/{dataset}/{model}.parquet",
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


rule figure_data_quantity:
    """Δ Overall vs full of models trained on the top share of the SelectIT-sorted data."""
    input:
        evals=QUANTITY_EVALS,
    output:
        pdf="figures/data_quantity.pdf",
        png=report(
            "figures/data_quantity.png",
            caption="../report/figures/data_quantity.rst",
            category="Figures",
        ),
        csv="figures/data_quantity.csv",
    log:
        "logs/figure_data_quantity/figure.log",
    benchmark:
        "benchmarks/figure_data_quantity/figure.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        runs=QUANTITY_KEYS,
        benchmarks=EVALUATION["benchmarks"],
    script:
        "../scripts/figure_data_quantity.py"


rule figure_length_and_calculation:
    """Average length and calculation share of the full data, the judge and the SelectIT subsets."""
    input:
        subsets=FIGURE_LENGTH_SUBSETS,
    output:
        pdf="figures/length_and_calculation.pdf",
        png=report(
            "figures/length_and_calculation.png",
            caption="../report/figures/length_and_calculation.rst",
            category="Figures",
        ),
        csv="figures/length_and_calculation.csv",
    log:
        "logs/figure_length_and_calculation/figure.log",
    benchmark:
        "benchmarks/figure_length_and_calculation/figure.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        methods=LENGTH_METHODS,
        dataset=PAPER_DATASET,
    script:
        "../scripts/figure_length_and_calculation.py"


rule figure_trends_vs_proportion:
    """Calculation share and average length of the top p of the SelectIT-sorted data against p."""
    input:
        subsets=FIGURE_TREND_SUBSETS,
    output:
        pdf="figures/trends_vs_proportion.pdf",
        png=report(
            "figures/trends_vs_proportion.png",
            caption="../report/figures/trends_vs_proportion.rst",
            category="Figures",
        ),
        csv="figures/trends_vs_proportion.csv",
    log:
        "logs/figure_trends_vs_proportion/figure.log",
    benchmark:
        "benchmarks/figure_trends_vs_proportion/figure.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        proportions=PAPER["trend_proportions"],
        selected_proportion=PAPER["proportion"],
        dataset=PAPER_DATASET,
    script:
        "../scripts/figure_trends_vs_proportion.py"


rule figure_tsne:
    """t-SNE of the embeddings of the random and the SelectIT subset at the paper's proportion."""
    input:
        embeddings=f"results/embeddings/{PAPER_DATASET}/{TSNE['model']}.parquet",
        random=FIGURE_RANDOM_SUBSET,
        selectit=FIGURE_SELECTIT_SUBSET,
    output:
        pdf="figures/tsne.pdf",
        png=report(
            "figures/tsne.png",
            caption="../report/figures/tsne.rst",
            category="Figures",
        ),
        csv="figures/tsne.csv",
    log:
        "logs/figure_tsne/figure.log",
    benchmark:
        "benchmarks/figure_tsne/figure.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        tsne=TSNE,
        dataset=PAPER_DATASET,
    script:
        "../scripts/figure_tsne.py"


rule figure_score_distributions:
    """Every level of score; flawed vs clean records where the data labels flaws."""
    input:
        samples=f"results/data/{PAPER_DATASET}/samples.parquet",
        scores=f"results/scores/{PAPER_DATASET}/selectit.parquet",
        selectit=FIGURE_SELECTIT_SUBSET,
    output:
        pdf="figures/score_distributions.pdf",
        png=report(
            "figures/score_distributions.png",
            caption="../report/figures/score_distributions.rst",
            category="Figures",
        ),
        csv="figures/score_distributions.csv",
    log:
        "logs/figure_score_distributions/figure.log",
    benchmark:
        "benchmarks/figure_score_distributions/figure.tsv"
    conda:
        "../envs/figures.yaml"
    params:
        proportion=PAPER["proportion"],
        score_levels=config["score_levels"],
        dataset=PAPER_DATASET,
    script:
        "../scripts/figure_score_distributions.py"


rule figure_index:
    """figures/all: every figure with its caption and the pipeline outputs it was drawn from."""
    input:
        figures=expand("figures/{name}.{ext}", name=FIGURES, ext=["pdf", "png", "csv"]),
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
            name: [str(f) for f in getattr(rules, f"figure_{name}").input]
            for name in FIGURES
        },
    script:
        "../scripts/figure_index.py"
