import json

from selectit.judge import merge_judge_files
from selectit.smk import step

with step(snakemake):
    meta = merge_judge_files(
        snakemake.input.shards, snakemake.input.samples, snakemake.output.scores, snakemake.params.on_unparsed
    )
    print("judge table:", json.dumps(meta))
