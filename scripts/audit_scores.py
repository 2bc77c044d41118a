import pandas as pd

from selectit.audit import audit_metrics, median_mass
from selectit.fusion import read_samples
from selectit.atomic import write_text_atomic
from selectit.smk import step

with step(snakemake):
    p = snakemake.params
    metrics = audit_metrics(
        read_samples(snakemake.input.samples),
        read_samples(snakemake.input.canaries),
        p.scorers,
        p.proportions,
        seed=p.seed,
        token_prompt=p.token_prompt,
        models=p.models,
        mass=median_mass(snakemake.input.shards),
        max_mode_share=p.max_mode_share,
        min_score_mass=p.min_score_mass,
    )
    write_text_atomic(snakemake.output.metrics, metrics.to_csv(index=False))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(metrics.to_string())
