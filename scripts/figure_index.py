from selectit import layout
from selectit.paper import figures
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    entries = [{"name": name, "files": [layout.FIGURE.format(figure=name, ext=ext) for ext in ("pdf", "png", "csv")],
                "caption": p.captions[name], "sources": p.sources[name]} for name in p.names]
    print(figures.write_index(entries, snakemake.output.index))
