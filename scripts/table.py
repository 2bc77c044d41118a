from selectit.paper.registry import TABLES
from selectit.paper.tables import write_table
from selectit.smk import step

with step(snakemake):
    p, out = snakemake.params, snakemake.output
    inputs = {key: getattr(snakemake.input, key) for key in snakemake.input.keys()}
    params = {key: getattr(p, key) for key in ("title", "caption", "view", "labels", "extra")}
    frame = TABLES[snakemake.wildcards.table].make(inputs, params)
    write_table(frame, out.csv, out.md, out.tex, p.title, caption=p.caption)
