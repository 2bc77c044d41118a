# The paper's benchmark data (selectit.resources): with evaluation.data_dir resources/eval, each file an
# evaluation reads is downloaded from its pinned public source and checked by sha256. The downloads run on
# the submitting host (a local rule), which has the internet a cluster's compute nodes may lack;
# evaluation.download.mirror reads a local copy instead.


localrules:
    download_eval_file,
    eval_downloads,


rule download_eval_file:
    """One benchmark file (selectit.resources.FILES): downloaded, its sha256 checked, written atomically."""
    output:
        f"{resources.DOWNLOAD_DIR}/{{path}}",
    log:
        "logs/download_eval_file/{path}.log",
    wildcard_constraints:
        path=EVAL_DOWNLOAD_PATHS,
    conda:
        "../envs/evaluation.yaml"
    resources:
        mirror=EVALUATION["download"]["mirror"] or "",  # where the bytes come from: their sha256 is checked
    params:
        sha256=eval_download_sha256,
    script:
        "../scripts/download_eval_file.py"


# `snakemake eval_downloads`: every file the configured evaluations read (e.g. on a login node, before a run).
rule eval_downloads:
    input:
        SETTINGS.eval_download_targets(),
