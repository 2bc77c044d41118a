import json

from selectit.data import load_shard
from selectit.judge import job_settings, judge_shard_file
from selectit.engines import parse_numerics
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    engine, dtype = parse_numerics(p.numerics)
    # the settings that change the scores are params; those that do not (batch size, workers) are resources
    settings = job_settings(p.judge, json.loads(snakemake.resources.judge_run))
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
