rule select_subset:
    """A subset per (method, proportion) as Alpaca JSON + ShareGPT JSON + manifest."""
    input:
        unpack(baseline_scores),  # ifd / judge methods: their merged score table
        samples="results/data/{dataset}/samples.parquet",
        report="results/data/{dataset}/report.json",
        scores="results/scores/{dataset}/selectit.parquet",
        logits=lambda w: list(model_logits(w).values()),
        infos=lambda w: list(model_infos(w).values()),
    output:
        alpaca="results/subsets/{dataset}/{method}/{proportion}.json",
        sharegpt="results/subsets/{dataset}/{method}/{proportion}.sharegpt.json",
        manifest="results/subsets/{dataset}/{method}/{proportion}.manifest.json",
    log:
        "logs/select_subset/{dataset}/{method}/{proportion}.log",
    benchmark:
        "benchmarks/select_subset/{dataset}/{method}/{proportion}.tsv"
    conda:
        "../envs/selection.yaml"
    params:
        models=list(MODELS),
        scoring=config["scoring"],
        n_prompts=config["n_prompts"],
        seed=SELECTION["seed"],
        prompt_ids=[p.id for p in PROMPTS],
        judge_threshold=judge_threshold,
    script:
        "../scripts/select_subset.py"
