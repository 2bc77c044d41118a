from selectit.paper.tables import table3_alpha, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table3_alpha(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
