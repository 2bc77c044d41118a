from selectit.paper.tables import table2_k, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table2_k(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
