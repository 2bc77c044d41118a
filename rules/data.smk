rule prepare_data:
    """Normalise + validate the dataset once; report.json counts every policy applied."""
    input:
        dataset_source,
    output:
        samples="results/data/{dataset}/samples.parquet",
        report="results/data/{dataset}/report.json",
    params:
        spec=lambda w: DATASETS[w.dataset],
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    script:
        "../scripts/prepare_data.py"


rule split_shard:
    """One shard of samples, chosen by id hash (independent of record order)."""
    input:
        samples="results/data/{dataset}/samples.parquet",
    output:
        shard="results/data/{dataset}/shards/{shard}.parquet",
    params:
        n_shards=lambda w: DATASETS[w.dataset]["n_shards"],
    log:
        "logs/split_shard/{dataset}/{shard}.log",
    benchmark:
        "benchmarks/split_shard/{dataset}/{shard}.tsv"
    script:
        "../scripts/split_shard.py"
