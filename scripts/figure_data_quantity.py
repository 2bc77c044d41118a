from selectit.paper import figures
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    evals = figures.read_eval_results(snakemake.params.runs, snakemake.input.evals)
    points = figures.quantity_points(evals, snakemake.params.benchmarks)
    plotted = figures.plot_data_quantity(points, out.pdf, out.png)
    figures.write_csv_atomic(plotted, out.csv)
    print(plotted.to_string())
