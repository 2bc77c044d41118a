from selectit.embeddings import read_embeddings
from selectit.paper import figures
from selectit.smk import step

with step(snakemake):
    p, inp, out = snakemake.params, snakemake.input, snakemake.output
    groups = {"Random": figures.read_subset(inp.random)["id"], "SelectIT": figures.read_subset(inp.selectit)["id"]}
    points = figures.tsne_points(read_embeddings(inp.embeddings), groups, n=p.tsne["n"],
                                 perplexity=p.tsne["perplexity"], seed=p.tsne["seed"])
    plotted = figures.plot_tsne(points, out.pdf, out.png, model=p.tsne["model"], title_suffix=f"\n({p.dataset})")
    figures.write_csv_atomic(plotted.assign(perplexity=points.attrs["perplexity"]), out.csv)
    print(f"{len(plotted)} points, perplexity {points.attrs['perplexity']}")
