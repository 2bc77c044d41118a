from selectit.paper.figure_registry import draw
from selectit.smk import step

with step(snakemake):
    inputs = {key: getattr(snakemake.input, key) for key in snakemake.input.keys()}
    out = {key: getattr(snakemake.output, key) for key in ("pdf", "png", "csv")}
    print(draw(snakemake.wildcards.figure, inputs, dict(snakemake.params.settings), out).to_string())
