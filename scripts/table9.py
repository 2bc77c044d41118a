from selectit.models import rater_gpus
from selectit.paper import tables
from selectit.smk import step

with step(snakemake):
    inp, out, p = snakemake.input, snakemake.output, snakemake.params
    model_gpus = {m: rater_gpus(spec) for m, spec in snakemake.config["models"].items()}
    measured = tables.measured_efficiency(p.expected, p.gpus, tables.benchmarks_on_disk(p.expected, p.skip),
                                          model_gpus)
    tokens = tables.mean_tokens_per_row(inp.rating_shards) if inp.rating_shards else None
    source = f"measured: mean n_tokens of this run's {len(inp.rating_shards)} rating shard files"
    planned = tables.planned_rating_cost(inp.planned_config, tokens, tokens_source=source)
    tables.write_table(tables.table9_efficiency(measured, planned), out.csv, out.md, out.tex, p.title)
