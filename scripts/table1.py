from selectit.paper.tables import table1_main, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table1_main(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
