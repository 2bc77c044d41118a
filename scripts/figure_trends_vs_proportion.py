from selectit.paper import figures
from selectit.smk import step

with step(snakemake):
    p, out = snakemake.params, snakemake.output
    subsets = {q: figures.read_subset(path) for q, path in zip(p.proportions, snakemake.input.subsets, strict=True)}
    statistics = figures.trend_statistics(subsets)
    plotted = figures.plot_trends(statistics, out.pdf, out.png, selected_proportion=p.selected_proportion,
                                  title_suffix=f" ({p.dataset})")
    figures.write_csv_atomic(plotted, out.csv)
    print(plotted.to_string())
