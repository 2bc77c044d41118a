# `snakemake release`: a Hugging Face Hub dataset folder per configured subset (selectit.release).
from selectit.release import FILES as RELEASE_FILES, RELEASE_DIR, release_targets


rule release_subset:
    """One subset as a Hub dataset folder: the subset (Parquet + Alpaca JSON), every sample's scores, the card.
    The Parquet folders data/ and scores/ are replaced whole by the job and not declared: their file names carry
    a content digest (selectit.release), and a directory() output would add Snakemake's .snakemake_timestamp
    to a folder meant to be uploaded as it is. The card, written last, marks the folder complete.
    """
    input:
        unpack(baseline_scores),  # ifd / judge subsets: that baseline's own scores join the table
        subset=lambda w: subset_path(w.dataset, w.method, w.proportion),
        manifest=lambda w: layout.manifest(w.dataset, w.method, w.proportion),
        report=layout.DATA_REPORT,
        scores=layout.FUSED,
        infos=lambda w: list(model_infos(w).values()),
    output:
        card=f"{RELEASE_DIR}/{RELEASE_FILES['card']}",
        alpaca=f"{RELEASE_DIR}/{RELEASE_FILES['alpaca']}",
    log:
        "logs/release_subset/{dataset}/{method}/{proportion}.log",
    benchmark:
        "benchmarks/release_subset/{dataset}/{method}/{proportion}.tsv"
    wildcard_constraints:
        dataset=REAL_DATASETS,
    conda:
        "../envs/selection.yaml"
    params:
        source=lambda w: DATASETS[w.dataset],
        license=config["release"]["license"],
        models=MODELS,
        model_names=list(MODELS),
        prompts={p.id: p.text for p in PROMPTS},
        score_levels=config["score_levels"],
    script:
        "../scripts/release.py"
