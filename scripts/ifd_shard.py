import json
from pathlib import Path

from selectit.ifd import ifd_shard_file, load_ifd_shard
from selectit.engines import parse_numerics
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    engine, dtype = parse_numerics(p.numerics)
    stats = ifd_shard_file(
        model_dir=Path(snakemake.input.model).parent,
        shard=load_ifd_shard(p.dataset, snakemake.wildcards.shard, p.variant),
        max_length=p.max_length,
        out_path=snakemake.output.ifd,
        dtype=dtype,
        engine=engine,
        token_budget=snakemake.resources.token_budget,
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
        variant=p.variant,
    )
    print("IFD stats:", json.dumps(stats))
