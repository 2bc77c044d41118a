from selectit.data import prepare_samples
from selectit.smk import step

with step(snakemake):
    prepare_samples(snakemake.params.spec, snakemake.output.samples, snakemake.output.report)
