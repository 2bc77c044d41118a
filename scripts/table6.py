from selectit.paper.tables import table6_bases, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table6_bases(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
