from selectit.paper.tables import table10_strategies, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table10_strategies(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
