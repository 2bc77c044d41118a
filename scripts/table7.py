from selectit.paper.tables import table7_datasets, write_table
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    write_table(table7_datasets(snakemake.config), out.csv, out.md, out.tex, snakemake.params.title)
