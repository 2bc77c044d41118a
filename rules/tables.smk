# The paper's tables (selectit.paper.tables): `snakemake tables/all` builds every one and the Markdown index
# tables/all. Each table is results/tables/<name>.{csv,md,tex}, computed only from pipeline outputs.
from selectit.paper import plan as paper_plan
from selectit.paper.registry import TABLES

TABLE_PAPER = paper_plan.settings(config)
TABLE_RUNS = paper_plan.runs(config)
TABLE_ALL_RUNS = paper_plan.all_runs(config)
# The audit's table is in tables/all when the audit is on (audit.enabled).
TABLE_TITLES = {
    name: spec.title for name, spec in TABLES.items() if name != "audit" or AUDIT_PLANS
}


# Inputs, as lists computed once (rules/common.smk holds the path helpers). Runs are canonical
# (selectit.paper.plan), so a run shared by several tables is trained and evaluated once.
TABLE_EVALS = {
    key: [layout.eval_result(*r, b) for r in runs for b in EVALUATION["benchmarks"]]
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
TABLE_MANIFESTS = {(d, m, q): layout.manifest(d, m, q) for d, m, q in TABLE_SUBSETS}
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
TABLE_RATING_SHARDS = dataset_rating_shards(TABLE_DATASET)


# What each table reads (selectit.paper.registry declares the rest).
TABLE_INPUTS = {
    **{
        name: {"evals": TABLE_EVALS[name]}
        for name in ("table1", "table2", "table3", "table6", "table10")
    },
    "table4": {"manifests": TABLE_LEVEL_MANIFESTS},
    "table7": {
        "evals": TABLE_EVALS["table7"],
        "manifests": sorted(
            {
                TABLE_MANIFESTS[(r.dataset, r.method, r.proportion)]
                for r in TABLE_RUNS["table7"]
            }
        ),
    },
    "table9": {
        "evals": TABLE_EVALS["all"],
        "manifests": list(TABLE_MANIFESTS.values()),
        "planned_config": TABLE_PAPER["cost"]["config"],
        "rating_shards": TABLE_RATING_SHARDS,
    },
    "audit": {"metrics": SETTINGS.audit_targets()},
    "reported_vs_reproduced": {
        "full": subset_path(TABLE_DATASET, "full", 1.0),
        "selectit": subset_path(
            TABLE_DATASET, *paper_plan.canonical("selectit", TABLE_PROPORTION, config)
        ),
        "judge": (
            [
                subset_path(
                    TABLE_DATASET,
                    *paper_plan.canonical("judge", TABLE_PROPORTION, config),
                )
            ]
            if "judge" in TABLE_PAPER["methods"]
            else []
        ),
    },
}
# The methods each table shows, for its labels (a label edit reruns the tables that show the method).
TABLE_METHODS = {
    **{name: sorted({r.method for r in runs}) for name, runs in TABLE_RUNS.items()},
    "table4": list(LEVELS),
    "reported_vs_reproduced": ["full", "judge", "selectit"],
}

# What table_params (rules/common.smk) reads of the above, given to it rather than looked up by name.
TABLE_CONTEXT = {
    "expected": TABLE_EXPECTED_BENCHMARKS,
    "paper": TABLE_PAPER,
    "methods": TABLE_METHODS,
    "registry": TABLES,
}


rule table:
    """One table of the paper (selectit.paper.registry): results/tables/<name>.{csv,md,tex}."""
    input:
        unpack(lambda w: TABLE_INPUTS[w.table]),
    output:
        csv=report(
            layout.TABLE.format(table="{table}", ext="csv"),
            caption="../report/tables/caption.rst",
            category="Tables",
        ),
        md=layout.TABLE.format(table="{table}", ext="md"),
        tex=layout.TABLE.format(table="{table}", ext="tex"),
    log:
        "logs/table/{table}.log",
    benchmark:
        "benchmarks/table/{table}.tsv"
    wildcard_constraints:
        table="|".join(TABLES),
    conda:
        "../envs/tables.yaml"
    params:
        **{
            key: (lambda w, key=key: table_params(w.table, TABLE_CONTEXT)[key])
            for key in ("title", "caption", "view", "labels", "extra")
        },
    script:
        "../scripts/table.py"


rule tables_index:
    """tables/all: a Markdown page holding every table (`snakemake tables/all` builds them all)."""
    input:
        tables=[layout.TABLE.format(table=name, ext="md") for name in TABLE_TITLES],
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
