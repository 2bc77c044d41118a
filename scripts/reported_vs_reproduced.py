from selectit.paper.tables import reported_vs_reproduced, write_table
from selectit.smk import step

with step(snakemake):
    inp, out = snakemake.input, snakemake.output
    subsets = {"full": inp.full, "selectit": inp.selectit, "judge": inp.judge[0] if inp.judge else None}
    write_table(reported_vs_reproduced(subsets), out.csv, out.md, out.tex, snakemake.params.title)
