from selectit.paper.tables import write_index
from selectit.smk import step

with step(snakemake):
    write_index(dict(zip(snakemake.params.titles, snakemake.input.tables)), snakemake.output.index)
