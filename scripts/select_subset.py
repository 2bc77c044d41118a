from selectit.selection import make_subset_from_files
from selectit.smk import step

with step(snakemake):
    p, w, out = snakemake.params, snakemake.wildcards, snakemake.output
    make_subset_from_files(
        method_name=w.method,
        proportion=float(w.proportion),
        samples_path=snakemake.input.samples,
        report_path=snakemake.input.report,
        logits_paths=dict(zip(p.models, snakemake.input.logits)),
        info_paths=dict(zip(p.models, snakemake.input.infos)),
        scoring=p.scoring,
        n_prompts=p.n_prompts,
        prompt_ids=p.prompt_ids,
        seed=p.seed,
        alpaca_path=out.alpaca,
        sharegpt_path=out.sharegpt,
        manifest_path=out.manifest,
        ifd_path=snakemake.input.get("ifd"),
        judge_path=snakemake.input.get("judge"),
        judge_threshold=p.judge_threshold,
    )
