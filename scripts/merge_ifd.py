from selectit.ifd import merge_ifd_files
from selectit.smk import step

with step(snakemake):
    merge_ifd_files(snakemake.input.shards, snakemake.input.samples, snakemake.output.scores)
