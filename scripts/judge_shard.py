import json

from selectit.data import load_shard
from selectit.judge import judge_settings, judge_shard_file
from selectit.smk import step

with step(snakemake):
    p, config = snakemake.params, snakemake.config
    # every setting, read here: only those that change the scores are params (a threshold edit reruns nothing)
    settings = judge_settings(config["selection"].get("judge"), next(iter(config["models"])))
    stats = judge_shard_file(
        settings=settings,
        shard=load_shard(p.dataset, snakemake.wildcards.shard),
        out_path=snakemake.output.judge,
        dtype=p.dtype,
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
    )
    print("judge stats:", json.dumps(stats))
