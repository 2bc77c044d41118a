# The paper's tables (selectit.paper.tables): `snakemake tables/all` builds every one and the Markdown index
# tables/all. Each table is results/tables/<name>.{csv,md,tex}, computed only from pipeline outputs.
from selectit.paper import plan as paper_plan
from selectit.paper.tables import declared_gpus

TABLE_PAPER = paper_plan.settings(config)
TABLE_RUNS = paper_plan.runs(config)
TABLE_ALL_RUNS = paper_plan.all_runs(config)
TABLE_TITLES = {
    "table1": "Table 1",
    "table2": "Table 2",
    "table3": "Table 3",
    "table4": "Table 4",
    "table6": "Table 6",
    "table7": "Table 7",
    "table9": "Table 9",
    "table10": "Table 10",
    "reported_vs_reproduced": "Reported vs reproduced",
}


# Inputs, as lists computed once (rules/common.smk holds the path helpers). Runs are canonical
# (selectit.paper.plan), so a run shared by several tables is trained and evaluated once.
TABLE_EVALS = {
    key: [
        f"{run_dir('eval', *r)}/{b}.json"
        for r in runs
        for b in EVALUATION["benchmarks"]
    ]
    for key, runs in {**TABLE_RUNS, "all": TABLE_ALL_RUNS}.items()
}
# (dataset, method, proportion) of every subset the tables read or train on, and their manifests: the runs'
# subsets, Table 4's levels, and the full/judge/SelectIT subsets of the reported-vs-reproduced table.
TABLE_DATASET, TABLE_PROPORTION = TABLE_PAPER["dataset"], TABLE_PAPER["proportion"]
TABLE_READ_METHODS = ["token_r", "sentence_r", "model_r", "selectit", "full"]
TABLE_READ_METHODS += ["judge"] if "judge" in TABLE_PAPER["methods"] else []
TABLE_SUBSETS = sorted(
    {(r.dataset, r.method, r.proportion) for r in TABLE_ALL_RUNS}
    | {
        (TABLE_DATASET, *paper_plan.canonical(m, TABLE_PROPORTION, config))
        for m in TABLE_READ_METHODS
    }
)
TABLE_MANIFESTS = {
    (d, m, q): subset_path(d, m, q).removesuffix(".json") + ".manifest.json"
    for d, m, q in TABLE_SUBSETS
}
TABLE_LEVEL_MANIFESTS = [
    TABLE_MANIFESTS[(TABLE_DATASET, *paper_plan.canonical(m, TABLE_PROPORTION, config))]
    for m in ("token_r", "sentence_r", "model_r", "selectit")
]
TABLE_DATASETS = sorted({d for d, _, _ in TABLE_SUBSETS})
# Table 9: the benchmark TSV of every job in the tables' DAG, per rule. They are read at run time, not
# declared as inputs: Snakemake would rerun the producer of a missing benchmark file (a rating or training
# job) whenever a table reruns. Rules outside this list (baselines, figures) are read from benchmarks/ as found.
TABLE_EXPECTED_BENCHMARKS = {
    "prepare_data": expand(rules.prepare_data.benchmark, dataset=TABLE_DATASETS),
    "prepare_model": expand(
        rules.prepare_model.benchmark,
        model=sorted(set(MODELS) | {base_model(r.base) for r in TABLE_ALL_RUNS}),
    ),
    "rate_shard": [
        f
        for d in TABLE_DATASETS
        for f in expand(
            rules.rate_shard.benchmark,
            dataset=d,
            model=list(MODELS),
            prompt=[p.id for p in PROMPTS],
            shard=shards(d),
        )
    ],
    "merge_ratings": expand(
        rules.merge_ratings.benchmark, dataset=TABLE_DATASETS, model=list(MODELS)
    ),
    "token_scores": expand(
        rules.token_scores.benchmark, dataset=TABLE_DATASETS, model=list(MODELS)
    ),
    "sentence_scores": [
        rules.sentence_scores.benchmark.format(dataset=d, model=r, k=k, alpha=a)
        for d in TABLE_DATASETS
        for r in MODELS
        for k, a in sentence_points(levels_read(m for _, m, _ in TABLE_SUBSETS))
    ],
    "level_scores": [
        rules.level_scores.benchmark.format(dataset=d, method=m)
        for d in TABLE_DATASETS
        for m in levels_read(m for _, m, _ in TABLE_SUBSETS)
    ],
    "fuse_scores": expand(rules.fuse_scores.benchmark, dataset=TABLE_DATASETS),
    "select_subset": [
        rules.select_subset.benchmark.format(dataset=d, method=m, proportion=q)
        for d, m, q in TABLE_SUBSETS
    ],
    "train_subset": [
        rules.train_subset.benchmark.format(**r._asdict()) for r in TABLE_ALL_RUNS
    ],
    "evaluate": [
        rules.evaluate.benchmark.format(**r._asdict(), benchmark=b)
        for r in TABLE_ALL_RUNS
        for b in EVALUATION["benchmarks"]
    ],
}
# Table 9 measures tokens per rating row on this run's rating shards of the main dataset.
TABLE_RATING_SHARDS = expand(
    "results/ratings/{dataset}/{model}/{prompt}/{shard}.parquet",
    dataset=TABLE_DATASET,
    model=list(MODELS),
    prompt=[p.id for p in PROMPTS],
    shard=shards(TABLE_DATASET),
)


rule table1:
    """Main results: every method of paper.methods on each main base, mean ± std over seeds."""
    input:
        evals=TABLE_EVALS["table1"],
    output:
        csv=report(
            "results/tables/table1.csv",
            caption="../report/tables/table1.rst",
            category="Tables",
        ),
        md="results/tables/table1.md",
        tex="results/tables/table1.tex",
    log:
        "logs/table1/table1.log",
    benchmark:
        "benchmarks/table1/table1.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table1"],
    script:
        "../scripts/table1.py"


rule table2:
    """Effect of K, the number of rating prompts (subsets of the same rating shards)."""
    input:
        evals=TABLE_EVALS["table2"],
    output:
        csv=report(
            "results/tables/table2.csv",
            caption="../report/tables/table2.rst",
            category="Tables",
        ),
        md="results/tables/table2.md",
        tex="results/tables/table2.tex",
    log:
        "logs/table2/table2.log",
    benchmark:
        "benchmarks/table2/table2.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table2"],
    script:
        "../scripts/table2.py"


rule table3:
    """Effect of α (re-fused from the stored logits)."""
    input:
        evals=TABLE_EVALS["table3"],
    output:
        csv=report(
            "results/tables/table3.csv",
            caption="../report/tables/table3.rst",
            category="Tables",
        ),
        md="results/tables/table3.md",
        tex="results/tables/table3.tex",
    log:
        "logs/table3/table3.log",
    benchmark:
        "benchmarks/table3/table3.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table3"],
    script:
        "../scripts/table3.py"


rule table4:
    """Contribution of each level to the final SelectIT selection (subset manifests; no training)."""
    input:
        manifests=TABLE_LEVEL_MANIFESTS,
    output:
        csv=report(
            "results/tables/table4.csv",
            caption="../report/tables/table4.rst",
            category="Tables",
        ),
        md="results/tables/table4.md",
        tex="results/tables/table4.tex",
    log:
        "logs/table4/table4.log",
    benchmark:
        "benchmarks/table4/table4.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table4"],
    script:
        "../scripts/table4.py"


rule table6:
    """Other foundation models: paper.other_methods on the main and the other bases."""
    input:
        evals=TABLE_EVALS["table6"],
    output:
        csv=report(
            "results/tables/table6.csv",
            caption="../report/tables/table6.rst",
            category="Tables",
        ),
        md="results/tables/table6.md",
        tex="results/tables/table6.tex",
    log:
        "logs/table6/table6.log",
    benchmark:
        "benchmarks/table6/table6.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table6"],
    script:
        "../scripts/table6.py"


rule table7:
    """Other instruction datasets, with their sizes before and after selection."""
    input:
        evals=TABLE_EVALS["table7"],
        manifests=sorted(
            {
                TABLE_MANIFESTS[(r.dataset, r.method, r.proportion)]
                for r in TABLE_RUNS["table7"]
            }
        ),
    output:
        csv=report(
            "results/tables/table7.csv",
            caption="../report/tables/table7.rst",
            category="Tables",
        ),
        md="results/tables/table7.md",
        tex="results/tables/table7.tex",
    log:
        "logs/table7/table7.log",
    benchmark:
        "benchmarks/table7/table7.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table7"],
    script:
        "../scripts/table7.py"


rule table9:
    """Efficiency: wall time and GPU-hours per stage from the benchmark TSVs, and the planned rating
    cost of paper.cost.config."""
    input:
        evals=TABLE_EVALS["all"],
        manifests=list(TABLE_MANIFESTS.values()),
        planned_config=TABLE_PAPER["cost"]["config"],
        rating_shards=TABLE_RATING_SHARDS,
    output:
        csv=report(
            "results/tables/table9.csv",
            caption="../report/tables/table9.rst",
            category="Tables",
        ),
        md="results/tables/table9.md",
        tex="results/tables/table9.tex",
    log:
        "logs/table9/table9.log",
    benchmark:
        "benchmarks/table9/table9.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        expected=TABLE_EXPECTED_BENCHMARKS,
        # every rule's `gpu` resource (None where computed per job), read once all rules are known
        gpus=lambda w: declared_gpus(workflow.rules),
        skip=list(TABLE_TITLES) + ["tables_index"],
        title=TABLE_TITLES["table9"],
    script:
        "../scripts/table9.py"


rule table10:
    """Other selection strategies, with Δ Overall vs full."""
    input:
        evals=TABLE_EVALS["table10"],
    output:
        csv=report(
            "results/tables/table10.csv",
            caption="../report/tables/table10.rst",
            category="Tables",
        ),
        md="results/tables/table10.md",
        tex="results/tables/table10.tex",
    log:
        "logs/table10/table10.log",
    benchmark:
        "benchmarks/table10/table10.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        paper=TABLE_PAPER,
        title=TABLE_TITLES["table10"],
    script:
        "../scripts/table10.py"


rule reported_vs_reproduced:
    """The paper's average length and calculation share beside ours: full data, judge and
    SelectIT subsets."""
    input:
        full=subset_path(TABLE_DATASET, "full", 1.0),
        selectit=subset_path(
            TABLE_DATASET, *paper_plan.canonical("selectit", TABLE_PROPORTION, config)
        ),
        judge=(
            [
                subset_path(
                    TABLE_DATASET,
                    *paper_plan.canonical("judge", TABLE_PROPORTION, config),
                )
            ]
            if "judge" in TABLE_PAPER["methods"]
            else []
        ),
    output:
        csv=report(
            "results/tables/reported_vs_reproduced.csv",
            caption="../report/tables/reported_vs_reproduced.rst",
            category="Tables",
        ),
        md="results/tables/reported_vs_reproduced.md",
        tex="results/tables/reported_vs_reproduced.tex",
    log:
        "logs/reported_vs_reproduced/reported_vs_reproduced.log",
    benchmark:
        "benchmarks/reported_vs_reproduced/reported_vs_reproduced.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        title=TABLE_TITLES["reported_vs_reproduced"],
    script:
        "../scripts/reported_vs_reproduced.py"


rule tables_index:
    """tables/all: a Markdown page holding every table (`snakemake tables/all` builds them all)."""
    input:
        tables=[f"results/tables/{name}.md" for name in TABLE_TITLES],
    output:
        index="tables/all",
    log:
        "logs/tables_index/tables_index.log",
    benchmark:
        "benchmarks/tables_index/tables_index.tsv"
    conda:
        "../envs/tables.yaml"
    params:
        titles=list(TABLE_TITLES.values()),
    script:
        "../scripts/tables_index.py"
