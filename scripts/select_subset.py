from selectit.selection import make_subset_from_files
from selectit.smk import step

with step(snakemake):
    out = snakemake.output
    make_subset_from_files(
        method_name=snakemake.wildcards.method,
        proportion=float(snakemake.wildcards.proportion),
        samples_path=snakemake.input.samples,
        report_path=snakemake.input.report,
        settings=dict(snakemake.params.settings),
        alpaca_path=out.alpaca,
        sharegpt_path=out.sharegpt,
        manifest_path=out.manifest,
        scores_path=snakemake.input.get("scores"),
    )
