from selectit.fusion import fuse_to_file
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    fuse_to_file(snakemake.input.samples, dict(zip(p.models, snakemake.input.logits)),
                 dict(zip(p.models, snakemake.input.infos)), p.scoring, p.n_prompts, snakemake.output.scores)
