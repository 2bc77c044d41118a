import json

from selectit.data import load_shard
from selectit.judge import judge_settings, judge_shard_file
from selectit.engines import parse_numerics
from selectit.smk import step

with step(snakemake):
    p, config = snakemake.params, snakemake.config
    engine, dtype = parse_numerics(p.numerics)
    # every setting, read here: only those that change the scores are params (a threshold edit reruns nothing)
    settings = judge_settings(config["selection"].get("judge"), next(iter(config["models"])))
    stats = judge_shard_file(
        settings=settings,
        shard=load_shard(p.dataset, snakemake.wildcards.shard),
        out_path=snakemake.output.judge,
        dtype=dtype,
        engine=engine,
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
    )
    print("judge stats:", json.dumps(stats))
