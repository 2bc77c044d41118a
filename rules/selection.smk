checkpoint select_subset:
    """A subset per (method, proportion) as Alpaca JSON + ShareGPT JSON + manifest. Inputs and params come
    from the method's declaration (selectit.methods), so a subset is re-selected exactly when what it reads
    changes. A checkpoint: training reads the subset's content digest once it is written.
    """
    input:
        unpack(selection_inputs),
    output:
        alpaca=layout.SUBSET,
        sharegpt=layout.SUBSET_SHAREGPT,
        manifest=layout.SUBSET_MANIFEST,
    log:
        "logs/select_subset/{dataset}/{method}/{proportion}.log",
    benchmark:
        "benchmarks/select_subset/{dataset}/{method}/{proportion}.tsv"
    wildcard_constraints:
        dataset=REAL_DATASETS,
    conda:
        "../envs/selection.yaml"
    params:
        settings=lambda w: SETTINGS.select_settings(w.method),
    script:
        "../scripts/select_subset.py"
