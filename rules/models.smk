rule prepare_model:
    """Convert a rater once to a safetensors HF folder with model.json (theta, fingerprint)."""
    output:
        info=layout.MODEL_INFO,
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "benchmarks/prepare_model/{model}.tsv"
    conda:
        "../envs/rating.yaml"
    params:
        spec=lambda w: SETTINGS.model_specs[w.model],
    script:
        "../scripts/prepare_model.py"
