rule evaluate:
    """One benchmark (mmlu, gsm, bbh, tydiqa, codex, alpaca_eval) on one fine-tuned model: a JSON with
    the metric's value, n, the settings, package versions and every prediction."""
    input:
        model=layout.TRAIN_RESULT,
        data=eval_data,
        judge=eval_judge,
    output:
        result=layout.EVAL_RESULT,
    log:
        "logs/evaluate/{base}/{dataset}/{method}/{proportion}/seed{seed}/{benchmark}.log",
    benchmark:
        "benchmarks/evaluate/{base}/{dataset}/{method}/{proportion}/seed{seed}/{benchmark}.tsv"
    wildcard_constraints:
        benchmark="|".join(BENCHMARKS),
    conda:
        "../envs/evaluation.yaml"
    threads: EVALUATION["threads"]
    resources:
        gpu=1,
    params:
        data_dir=EVALUATION["data_dir"],
        settings=lambda w: SETTINGS.eval_settings(w.benchmark),
    script:
        "../scripts/evaluate_benchmark.py"
