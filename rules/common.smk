# Input functions and small glue used by every rule file. The config is validated, checked and resolved once by
# selectit.settings (a bad config stops `snakemake -n` here, naming its key); the logic is in the package.
import json
import re
from pathlib import Path

from selectit import layout, resources
from selectit.evaluation import BENCHMARKS
from selectit.ifd import IFD_PROMPT_SHA
from selectit.judge import result_settings, run_settings
from selectit.methods import BASELINES, LEVELS, NAME_PATTERN, name_pattern
from selectit.methods import label as method_label
from selectit.methods import parse as parse_method
from selectit.paper.registry import view as table_view
from selectit.paper.tables import declared_gpus
from selectit.settings import Settings
from selectit.workflow import file_digest

SETTINGS = Settings(config)
DATASETS = SETTINGS.datasets
MODELS = SETTINGS.models
PROMPTS = SETTINGS.prompts
SELECTION = SETTINGS.selection
TRAINING = SETTINGS.training
EVALUATION = SETTINGS.evaluation
IFD = SETTINGS.ifd
JUDGE = SETTINGS.judge
AUDIT_PLANS = SETTINGS.audit_plans
# The datasets that may be selected, trained on and released: the configured ones, never a canary set.
REAL_DATASETS = SETTINGS.real_datasets()
LEVEL_PATTERN = name_pattern(LEVELS)
EVAL_DOWNLOAD_PATHS = "|".join(re.escape(f.path) for f in resources.FILES)
model_gpus = SETTINGS.model_gpus
dataset_spec = SETTINGS.dataset_spec
shards = SETTINGS.shards
dataset_rating_shards = SETTINGS.rating_shards
levels_read = SETTINGS.levels_read
sentence_points = SETTINGS.sentence_points
base_model = SETTINGS.base_model
subset_path = layout.subset


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    prompt="p[0-9a-f]{10}",
    shard="shard[0-9]{3}",
    method=NAME_PATTERN,
    proportion="[0-9.]+",
    k="[0-9]+",
    alpha="[0-9][0-9.e+-]*",
    base="[A-Za-z0-9_.-]+",
    seed="[0-9]+",


# ------------------------------------------------------------------------- data, models and rating
def dataset_source(wildcards):
    path = SETTINGS.source_path(wildcards.dataset)
    return [path] if path else []


def rating_data_input(wildcards):
    """A local dataset file is read directly (ancient: its mtime alone triggers nothing; the shard
    hash param does); a Hub dataset goes through prepare_data."""
    path = SETTINGS.source_path(wildcards.dataset)
    if path:
        return ancient(path)
    return layout.SAMPLES.format(dataset=wildcards.dataset)


def shard_hash(wildcards):
    return SETTINGS.shard_hash(wildcards.dataset, wildcards.shard)


def rating_shards(wildcards):
    return dataset_rating_shards(wildcards.dataset, [wildcards.model])


def model_infos(wildcards):
    return SETTINGS.model_infos()


# ------------------------------------------------------------ baselines of Table 1: IFD (Q2Q) and the judge
def ifd_shards(wildcards):
    return [
        layout.IFD_SHARD.format(dataset=wildcards.dataset, model=IFD["model"], shard=s)
        for s in shards(wildcards.dataset)
    ]


def judge_shards(wildcards):
    return [
        layout.JUDGE_SHARD.format(dataset=wildcards.dataset, shard=s)
        for s in shards(wildcards.dataset)
    ]


def judge_model(wildcards):
    """A local (hf) judge's prepared folder is an input of the judge jobs: re-preparing it reruns them."""
    return SETTINGS.judge_model()


def baseline_scores(wildcards):
    """The merged IFD or judge table, for those selection methods only."""
    m = parse_method(wildcards.method)
    return {m.kind: m.score_table(wildcards.dataset)} if m.kind in BASELINES else {}


# --------------------------------------------------------------- scoring and selection (selectit.methods)
def sentence_inputs(wildcards):
    """The rater's token file; under scoring.variant released at k != score_levels also its logits, from
    which the released code's k-class token scores are recomputed (selectit.fusion.sentence_file).
    """
    d, r = wildcards.dataset, wildcards.model
    extra = (
        {"logits": layout.LOGITS.format(dataset=d, model=r)}
        if config["scoring"]["variant"] == "released"
        and int(wildcards.k) != config["score_levels"]
        else {}
    )
    return {"token": layout.TOKEN.format(dataset=d, model=r), **extra}


def level_inputs(wildcards):
    """A score level reads every rater's token file (token_r, model_r: prompt scoring.token_prompt) or sentence file
    of its own K and alpha (sentence_r, selectit), and the raters' model.json (thetas, fingerprints).
    """
    m = SETTINGS.method(wildcards.method)
    d = wildcards.dataset
    if m.spec.source == "token":
        sources = [layout.TOKEN.format(dataset=d, model=r) for r in MODELS]
    else:
        sources = [layout.sentence(d, r, m.k, m.alpha) for r in MODELS]
    return {"sources": sources, "infos": list(SETTINGS.model_infos().values())}


def fused_inputs(wildcards):
    d, k, alpha = wildcards.dataset, config["n_prompts"], config["scoring"]["alpha"]
    return {
        "samples": layout.SAMPLES.format(dataset=d),
        "token": [layout.TOKEN.format(dataset=d, model=r) for r in MODELS],
        "sentence": [layout.sentence(d, r, k, alpha) for r in MODELS],
        "levels": [layout.LEVEL.format(dataset=d, method=m) for m in LEVELS],
    }


def selection_inputs(wildcards):
    d = wildcards.dataset
    scores = parse_method(wildcards.method).score_table(d)
    return {
        "samples": layout.SAMPLES.format(dataset=d),
        "report": layout.DATA_REPORT.format(dataset=d),
        **({"scores": scores} if scores else {}),
    }


def audit_inputs(wildcards):
    """The audit of a dataset reads its samples and its canaries, every score file of the scorers for both,
    and the data's rating shards (the raters' score-token mass)."""
    d = wildcards.dataset
    files = [s[key] for s in AUDIT_PLANS[d] for key in ("real", "canary") if s[key]]
    return {
        "samples": layout.SAMPLES.format(dataset=d),
        "canaries": layout.SAMPLES.format(dataset=SETTINGS.canary_dataset(d)),
        "scores": sorted(set(files)),
        "shards": dataset_rating_shards(d),
    }


# ------------------------------------------------------------------------ training and evaluation
def _selected(wildcards):
    return checkpoints.select_subset.get(
        dataset=wildcards.dataset,
        method=wildcards.method,
        proportion=wildcards.proportion,
    ).output.alpaca


def base_model_info(wildcards):
    return layout.MODEL_INFO.format(model=base_model(wildcards.base))


def plan_model_infos(wildcards):
    return SETTINGS.plan_model_infos()


def training_subset(wildcards):
    """The subset, by content: its file time is ignored (ancient) and its digest is a param, so a subset
    rewritten with the same records (a reorder, an edit that leaves the selection as it was) trains
    nothing again. select_subset is a checkpoint, so the digest is read after the subset is (re)written.
    """
    return ancient(_selected(wildcards))


def training_subset_digest(wildcards):
    return file_digest(_selected(wildcards))


def deepspeed_config(wildcards):
    path = SETTINGS.base_settings(wildcards.base).get("deepspeed")
    return [path] if path else []


def eval_data(wildcards):
    return SETTINGS.eval_data(wildcards.benchmark)


def eval_download_sha256(wildcards):
    return resources.entry(wildcards.path).sha256


def eval_judge(wildcards):
    return SETTINGS.eval_judge(wildcards.benchmark)


# ------------------------------------------------------------------ tables (rules/tables.smk, the registry)
def table_params(name, context):
    """Everything a table reads besides its input files: its title and caption, its declared view of the
    config, the labels of the methods it shows, and Table 9's plan settings. `context`: what rules/tables.smk
    derives (TABLE_CONTEXT)."""
    spec = context["registry"][name]
    extra = None
    if name == "table9":
        extra = {
            "expected": context["expected"],
            "gpus": declared_gpus(workflow.rules),
            "skip": ["table", "tables_index"],
            "model_gpus": {m: model_gpus(m) for m in MODELS},
        }
    if name == "audit":
        extra = {"proportions": SELECTION["proportions"]}
    return {
        "title": spec.title,
        "caption": Path(f"{workflow.basedir}/report/tables/{name}.rst").read_text(),
        "view": table_view(config, context["paper"], spec.paper_keys),
        "labels": {m: method_label(m) for m in context["methods"].get(name, [])},
        "extra": extra,
    }
