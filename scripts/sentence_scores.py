from selectit.fusion import sentence_file
from selectit.smk import step

with step(snakemake):
    sentence_file(snakemake.input.token, snakemake.params.alpha, snakemake.output.sentence)
