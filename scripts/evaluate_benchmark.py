import json
from pathlib import Path

from selectit.evaluation.cli import evaluate, summary
from selectit.smk import step

with step(snakemake):
    result = evaluate(
        benchmark=snakemake.wildcards.benchmark,
        model_dir=Path(snakemake.input.model).parent,
        data_dir=snakemake.params.data_dir,
        out_path=snakemake.output.result,
        settings=snakemake.params.settings,
        threads=snakemake.threads,
    )
    print("result:", json.dumps(summary(result)))
