from selectit.fusion import merge_model_files
from selectit.smk import step

with step(snakemake):
    merge_model_files(snakemake.input.ratings, snakemake.input.samples, snakemake.params.prompt_ids,
                      snakemake.wildcards.model, snakemake.output.logits)
