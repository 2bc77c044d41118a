from selectit.fusion import token_file
from selectit.smk import step

with step(snakemake):
    token_file(snakemake.input.logits, snakemake.params.variant, snakemake.output.token)
