rule rate_shard:
    """K score-token logits per sample for one (model, prompt, shard): the only GPU-heavy step.
    The job reads its shard's rows (by id hash) from the dataset source itself, marked `ancient`, and
    reruns when the shard's membership hash (a param) changes, so adding records re-rates only the
    shards whose membership changed (see selectit.data.load_shard)."""
    input:
        data=rating_data_input,
        model=layout.MODEL_INFO,
    output:
        ratings=layout.RATING_SHARD,
    log:
        "logs/rate_shard/{dataset}/{model}/{prompt}/{shard}.log",
    benchmark:
        "benchmarks/rate_shard/{dataset}/{model}/{prompt}/{shard}.tsv"
    conda:
        "../envs/rating.yaml"
    threads: config["rating"]["threads"]
    resources:
        gpu=lambda w: model_gpus(w.model),
        token_budget=config["rating"]["token_budget"],  # a batch size: changes no score
    params:
        dataset=lambda w: dataset_spec(w.dataset),
        shard_hash=shard_hash,
        prompt_text=lambda w: SETTINGS.prompt_by_id[w.prompt].text,
        score_levels=config["score_levels"],
        max_length=config["rating"]["max_length"],
        numerics=SETTINGS.rating_numerics,
    script:
        "../scripts/rate_shard.py"
