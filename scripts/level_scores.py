from selectit.fusion import level_file
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    level_file(snakemake.wildcards.method, dict(zip(p.models, snakemake.input.sources)),
               dict(zip(p.models, snakemake.input.infos)), p.model_weights, snakemake.output.scores,
               token_prompt=p.settings.get("token_prompt", 1))
