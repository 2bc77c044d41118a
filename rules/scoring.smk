rule merge_ratings:
    """All shards x prompts of one model, checked complete; token-level scores per prompt (Eq. 2-3)."""
    input:
        samples="results/data/{dataset}/samples.parquet",
        ratings=rating_shards,
    output:
        logits="results/scores/{dataset}/{model}/logits.parquet",
        token="results/scores/{dataset}/{model}/token.parquet",
    log:
        "logs/merge_ratings/{dataset}/{model}.log",
    benchmark:
        "benchmarks/merge_ratings/{dataset}/{model}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        prompt_ids=[p.id for p in PROMPTS],
        variant=config["scoring"]["variant"],
    script:
        "../scripts/merge_ratings.py"


rule sentence_scores:
    """Sentence-level score of one model (Eq. 4)."""
    input:
        token="results/scores/{dataset}/{model}/token.parquet",
    output:
        sentence="results/scores/{dataset}/{model}/sentence.parquet",
    log:
        "logs/sentence_scores/{dataset}/{model}.log",
    benchmark:
        "benchmarks/sentence_scores/{dataset}/{model}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        alpha=config["scoring"]["alpha"],
    script:
        "../scripts/sentence_scores.py"


rule fuse_scores:
    """Every level for every sample: token/sentence per model, Token-R, Sentence-R, Model-R, SelectIT (Eq. 5)."""
    input:
        samples="results/data/{dataset}/samples.parquet",
        logits=lambda w: list(model_logits(w).values()),
        infos=lambda w: list(model_infos(w).values()),
        sentence=lambda w: expand(
            "results/scores/{dataset}/{model}/sentence.parquet",
            dataset=w.dataset,
            model=MODELS,
        ),
    output:
        scores="results/scores/{dataset}/selectit.parquet",
    log:
        "logs/fuse_scores/{dataset}.log",
    benchmark:
        "benchmarks/fuse_scores/{dataset}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        models=list(MODELS),
        scoring=config["scoring"],
        n_prompts=config["n_prompts"],
    script:
        "../scripts/fuse_scores.py"
