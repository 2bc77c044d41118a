# Baseline selection scores of Table 1: IFD (Q2Q) from a rater model, sharded like rating, and an
# AlpaGasus-style judge (a local model or an OpenAI-compatible endpoint). Logic: selectit/ifd.py, selectit/judge.py.


rule ifd_shard:
    """IFD = loss(response | instruction) / loss(response) of one shard's samples with one rater. Like
    rate_shard, the job reads its shard's rows from the dataset source (ancient) and reruns when the shard's
    membership hash changes."""
    input:
        data=rating_data_input,
        model=layout.MODEL_INFO,
    output:
        ifd=layout.IFD_SHARD,
    log:
        "logs/ifd_shard/{dataset}/{model}/{shard}.log",
    benchmark:
        "benchmarks/ifd_shard/{dataset}/{model}/{shard}.tsv"
    conda:
        "../envs/rating.yaml"
    threads: config["rating"]["threads"]
    resources:
        gpu=model_gpus(IFD["model"]),
        token_budget=IFD["token_budget"],  # a batch size: changes no score
    params:
        dataset=lambda w: dataset_spec(w.dataset),
        shard_hash=shard_hash,
        max_length=IFD["max_length"],
        variant=IFD["variant"],
        numerics=SETTINGS.rating_numerics,
        prompt_sha=IFD_PROMPT_SHA,
    script:
        "../scripts/ifd_shard.py"


rule merge_ifd:
    """Every IFD shard of the configured rater, checked complete and aligned with the samples."""
    input:
        samples=layout.SAMPLES,
        shards=ifd_shards,
    output:
        scores=layout.BASELINE.format(dataset="{dataset}", baseline="ifd"),
    log:
        "logs/merge_ifd/{dataset}.log",
    benchmark:
        "benchmarks/merge_ifd/{dataset}.tsv"
    conda:
        "../envs/scoring.yaml"
    script:
        "../scripts/merge_ifd.py"


rule judge_shard:
    """Judge scores 0-5 of one shard's samples (selectit.judge). Params hold only the settings that change
    the scores: editing the threshold or the number of workers reruns no judge job."""
    input:
        data=rating_data_input,
        judge=judge_model,
    output:
        judge=layout.JUDGE_SHARD,
    log:
        "logs/judge_shard/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/judge_shard/{dataset}/{shard}.tsv"
    conda:
        "../envs/evaluation.yaml"
    threads: config["rating"]["threads"]
    resources:
        gpu=SETTINGS.judge_gpus(),
        judge_run=json.dumps(run_settings(JUDGE)),  # batch size, workers, retries: change no score
    params:
        dataset=lambda w: dataset_spec(w.dataset),
        shard_hash=shard_hash,
        judge=result_settings(JUDGE),
        numerics=SETTINGS.rating_numerics if JUDGE["type"] == "hf" else None,
    script:
        "../scripts/judge_shard.py"


rule merge_judge:
    """Every judge shard, checked complete and aligned with the samples; the unparsed-answer policy applies."""
    input:
        samples=layout.SAMPLES,
        shards=judge_shards,
    output:
        scores=layout.BASELINE.format(dataset="{dataset}", baseline="judge"),
    log:
        "logs/merge_judge/{dataset}.log",
    benchmark:
        "benchmarks/merge_judge/{dataset}.tsv"
    conda:
        "../envs/scoring.yaml"
    params:
        on_unparsed=JUDGE["on_unparsed"],
    script:
        "../scripts/merge_judge.py"
