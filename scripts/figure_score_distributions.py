import pandas as pd

from selectit.paper import figures
from selectit.smk import step

with step(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    samples = pd.read_parquet(inp.samples)
    scores = pd.read_parquet(inp.scores)
    levels = figures.score_levels(scores)
    records = None
    if figures.has_flaw_labels(samples):
        records = figures.flaw_records(samples, scores, list(figures.read_subset(inp.selectit)["id"]))
    figures.plot_score_distributions(levels, records, p.proportion, out.pdf, out.png, score_levels_k=p.score_levels,
                                     title_suffix=f" ({p.dataset})")
    summary = figures.score_summary(levels, records, p.proportion)
    figures.write_csv_atomic(summary, out.csv)
    print(summary.to_string())
