# The planned GPU bill (selectit.cost): `snakemake plan` writes results/plan/gpu_hours.{csv,md} for the config in
# force, before anything runs on a GPU. Only the models whose size paper.cost.thetas does not give are prepared.


rule plan:
    """GPU-hours per stage (rating, IFD and the judge, fine-tuning, evaluation) and job kind of the config in
    force, from token counts and FLOPs at the MFU of paper.cost (selectit.cost); the fine-tunes also as they would
    cost with padded micro-batches."""
    input:
        plan_model_infos,
    output:
        csv=layout.PLAN.format(ext="csv"),
        md=layout.PLAN.format(ext="md"),
    log:
        "logs/plan.log",
    localrule: True
    conda:
        "../envs/tables.yaml"
    params:
        config=config,  # the plan is a function of the whole config: any edit replans (it takes seconds)
    script:
        "../scripts/plan_gpu_hours.py"
