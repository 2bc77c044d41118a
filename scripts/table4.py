from selectit.paper.tables import table4_levels, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table4_levels(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
