from selectit.paper import figures
from selectit.smk import step

with step(snakemake):
    p, out = snakemake.params, snakemake.output
    subsets = {m: figures.read_subset(path) for m, path in zip(p.methods, snakemake.input.subsets, strict=True)}
    statistics = figures.subset_statistics(subsets)
    plotted = figures.plot_length_and_calculation(statistics, out.pdf, out.png, title_suffix=f" ({p.dataset})")
    figures.write_csv_atomic(plotted, out.csv)
    print(plotted.to_string())
