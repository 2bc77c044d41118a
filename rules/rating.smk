rule rate_shard:
    """K score-token logits per sample for one (model, prompt, shard): the only GPU-heavy step.
    The shard is `ancient`: the rating reruns when its membership hash (params) changes, not when
    other shards of the same dataset are rewritten."""
    input:
        shard=ancient("results/data/{dataset}/shards/{shard}.parquet"),
        model="results/models/{model}/model.json",
    output:
        ratings="results/ratings/{dataset}/{model}/{prompt}/{shard}.parquet",
    params:
        shard_hash=shard_hash,
        prompt_text=lambda w: PROMPT_BY_ID[w.prompt].text,
        score_levels=config["score_levels"],
        max_length=config["rating"]["max_length"],
        dtype=config["rating"]["dtype"],
        token_budget=config["rating"]["token_budget"],
    threads: config["rating"]["threads"]
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    log:
        "logs/rate_shard/{dataset}/{model}/{prompt}/{shard}.log",
    benchmark:
        "benchmarks/rate_shard/{dataset}/{model}/{prompt}/{shard}.tsv"
    script:
        "../scripts/rate_shard.py"
