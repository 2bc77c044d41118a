from pathlib import Path

from selectit.models import prepare_model
from selectit.smk import step

with step(snakemake):
    prepare_model(snakemake.wildcards.model, snakemake.params.spec, Path(snakemake.output.info).parent)
