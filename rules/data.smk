rule prepare_data:
    """Normalise + validate the dataset once; report.json counts every policy applied."""
    input:
        dataset_source,
    output:
        samples=layout.SAMPLES,
        report=layout.DATA_REPORT,
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        "benchmarks/prepare_data/{dataset}.tsv"
    conda:
        "../envs/data.yaml"
    params:
        spec=lambda w: dataset_spec(w.dataset),
    script:
        "../scripts/prepare_data.py"
