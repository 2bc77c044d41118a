from pathlib import Path

from selectit.methods import BASELINES
from selectit.release import make_release
from selectit.smk import step

with step(snakemake):
    p, w, i = snakemake.params, snakemake.wildcards, snakemake.input
    make_release(
        subset_path=i.subset,
        manifest_path=i.manifest,
        report_path=i.report,
        scores_path=i.scores,
        info_paths=dict(zip(p.model_names, i.infos)),
        baselines={m: i.get(m) for m in BASELINES if i.get(m)},
        folder=Path(snakemake.output.card).parent,
        dataset=w.dataset,
        method=w.method,
        proportion=w.proportion,
        license=p.license,
        source=p.source,
        models=p.models,
        prompts=p.prompts,
        score_levels=p.score_levels,
    )
