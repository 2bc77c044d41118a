from selectit.fusion import fused_file
from selectit.smk import step

with step(snakemake):
    p, i = snakemake.params, snakemake.input
    fused_file(i.samples, dict(zip(p.models, i.token)), dict(zip(p.models, i.sentence)),
               dict(zip(p.levels, i.levels)), p.k, snakemake.output.scores)
