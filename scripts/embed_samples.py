import json
from pathlib import Path

from selectit.embeddings import embed_samples_file
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    stats = embed_samples_file(
        model_dir=Path(snakemake.input.model).parent,
        samples_path=snakemake.input.samples,
        out_path=snakemake.output.embeddings,
        max_length=p.max_length,
        token_budget=p.token_budget,
        dtype=p.dtype,
        threads=snakemake.threads,
        gpus=snakemake.resources.gpu,
    )
    print("embedding stats:", json.dumps(stats))
