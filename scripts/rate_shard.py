import json
from pathlib import Path

from selectit.data import load_shard
from selectit.prompts import RatingPrompt
from selectit.rating import rate_shard_file
from selectit.engines import parse_numerics
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    engine, dtype = parse_numerics(p.numerics)
    stats = rate_shard_file(
        model_dir=Path(snakemake.input.model).parent,
        shard=load_shard(p.dataset, snakemake.wildcards.shard),
        prompt=RatingPrompt(text=p.prompt_text, position=0),
        k=p.score_levels,
        max_length=p.max_length,
        out_path=snakemake.output.ratings,
        dtype=dtype,
        engine=engine,
        token_budget=snakemake.resources.token_budget,
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
    )
    print("rating stats:", json.dumps(stats))
