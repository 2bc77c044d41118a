from selectit import cost
from selectit.smk import step

with step(snakemake):
    frame = cost.plan(snakemake.params.config)
    cost.write_plan(frame, snakemake.output.csv, snakemake.output.md, "Planned GPU-hours of this config")
