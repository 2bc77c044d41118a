# SelectIT pipeline: data -> rating -> scoring -> selection (-> training -> evaluation -> paper).
# A table of contents: the rules live in rules/, the logic in the selectit package.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a config file is given on the command line (--configfile configs/paper.yaml):
# Snakemake would otherwise merge both, mixing the default's datasets and raters into the paper's.
# `--config key=value` alone merges on top of the default (the directive applies it after loading the file);
# with --configfile it merges on top of that file.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


# rules/common.smk validates the config against schemas/config.schema.yaml and settles it (selectit.settings).
include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/data.smk"
include: "rules/models.smk"
include: "rules/rating.smk"
include: "rules/baselines.smk"
include: "rules/scoring.smk"
include: "rules/selection.smk"
include: "rules/audit.smk"
include: "rules/release.smk"
include: "rules/training.smk"
include: "rules/resources.smk"
include: "rules/evaluation.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"


# Every level of score, the subsets of every configured method and the selection audit (when on); training
# and evaluation too when training.bases names any.
rule all:
    input:
        SETTINGS.fused_targets(),
        SETTINGS.subset_targets(),
        SETTINGS.audit_targets(),
        SETTINGS.train_targets(),
        SETTINGS.eval_targets(),


rule train_all:
    input:
        SETTINGS.train_targets(),


rule eval_all:
    input:
        SETTINGS.eval_targets(),


# A Hugging Face Hub dataset folder per configured subset: results/release/{dataset}/{method}/{proportion}/
rule release:
    input:
        release_targets(DATASETS, SELECTION["methods"], SELECTION["proportions"]),
