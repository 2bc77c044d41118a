from selectit.data import write_shard
from selectit.smk import step

with step(snakemake):
    write_shard(snakemake.input.samples, snakemake.params.n_shards, snakemake.wildcards.shard, snakemake.output.shard)
