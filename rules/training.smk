rule train_subset:
    """Fine-tune one base on one selected subset with one seed (selectit.training: response-only loss,
    DeepSpeed ZeRO-2 when configured). The HF model folder is the output's folder; checkpoints go to the
    sibling `seed{seed}.checkpoints/` and a rerun of the same run resumes from the newest one.
    """
    input:
        subset=training_subset,
        base=base_model_info,
        deepspeed=deepspeed_config,
    output:
        result=layout.TRAIN_RESULT,
    log:
        "logs/train_subset/{base}/{dataset}/{method}/{proportion}/seed{seed}.log",
    benchmark:
        "benchmarks/train_subset/{base}/{dataset}/{method}/{proportion}/seed{seed}.tsv"
    conda:
        "../envs/training.yaml"
    threads: TRAINING["nproc"] * TRAINING["threads"]
    resources:
        gpu=TRAINING["nproc"],
    params:
        settings=lambda w: SETTINGS.base_settings(w.base),
        nproc=TRAINING["nproc"],
        seed=lambda w: int(w.seed),
        subset_sha256=training_subset_digest,  # the subset's content: what reruns the fine-tune
    script:
        "../scripts/train_subset.py"
