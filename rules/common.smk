# Names, paths and input functions used by every rule file. The logic is in selectit.workflow.
import json
import re as _re

from selectit import engines, layout
from selectit.workflow import file_digest, rating_prompts, shard_hashes
from selectit.data import shard_names
from selectit.errors import InputError
from selectit.methods import (
    LEVELS,
    NAME_PATTERN,
    name_pattern,
    resolve,
    select_settings,
)
from selectit.methods import level_settings, token_prompt
from selectit.fusion import resolve_weights
from selectit.methods import parse as parse_method
from selectit.models import rater_gpus
from selectit.audit import audit_datasets, source_path

DATASETS = config["datasets"]
# The audit's canary sets (selectit.audit), one per audited dataset: rated like a dataset under their own
# name and path, never selected, trained or released.
AUDITS = audit_datasets(config)
# The datasets that may be selected, trained on and released: the configured ones, never a canary set.
REAL_DATASETS = "|".join(_re.escape(d) for d in DATASETS)
MODELS = config["models"]
PROMPTS = rating_prompts(config)
PROMPT_BY_ID = {p.id: p for p in PROMPTS}
SELECTION = config["selection"]
# What runs the raters, IFD and a local judge (selectit.engines), as the one param value of their numerics;
# an engine not installed here stops `snakemake -n` with the key and the command that installs it.
RATING_NUMERICS = engines.numerics(
    config["rating"]["engine"], config["rating"]["dtype"]
)
engines.check(config["rating"]["engine"], "config rating.engine")


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    prompt="p[0-9a-f]{10}",
    shard="shard[0-9]{3}",
    method=NAME_PATTERN,
    proportion="[0-9.]+",
    k="[0-9]+",
    alpha="[0-9][0-9.e+-]*",


def model_gpus(model):
    """GPUs of a job that runs a rater for inference: its `gpus` (a model too large for one GPU is split), else 1."""
    return rater_gpus(MODELS.get(model))


def model_source(spec):
    """What prepare_model builds a model from: its spec without `gpus` (a run setting, which re-prepares nothing)."""
    return {k: v for k, v in spec.items() if k != "gpus"}


def prepared_model_name(folder):
    """The model a folder results/models/<name>[/...] is prepared for, else None (a folder elsewhere)."""
    prefix = layout.MODEL_DIR.format(model="")
    folder = str(folder)
    return (
        folder.removeprefix(prefix).partition("/")[0]
        if folder.startswith(prefix)
        else None
    )


def dataset_spec(name):
    """What the jobs of a dataset read: its config entry, or an audit's canary set (its source's entry inside)."""
    return DATASETS[name] if name in DATASETS else AUDITS[name]


def shards(dataset):
    return shard_names(dataset_spec(dataset)["n_shards"])


def dataset_source(wildcards):
    path = source_path(dataset_spec(wildcards.dataset))
    return [path] if path else []


def rating_data_input(wildcards):
    """A local dataset file is read directly (ancient: its mtime alone triggers nothing; the shard
    hash param does); a Hub dataset goes through prepare_data."""
    path = source_path(dataset_spec(wildcards.dataset))
    if path:
        return ancient(path)
    return layout.SAMPLES.format(dataset=wildcards.dataset)


def shard_hash(wildcards):
    return shard_hashes(dataset_spec(wildcards.dataset))[wildcards.shard]


def dataset_rating_shards(dataset, models=None):
    """Every rating shard of a dataset: each prompt x shard of each rater (of `models`, default all)."""
    return expand(
        layout.RATING_SHARD,
        dataset=dataset,
        model=list(MODELS) if models is None else models,
        prompt=[p.id for p in PROMPTS],
        shard=shards(dataset),
    )


def rating_shards(wildcards):
    return dataset_rating_shards(wildcards.dataset, [wildcards.model])


def model_infos(wildcards):
    return {m: layout.MODEL_INFO.format(model=m) for m in MODELS}


subset_path = layout.subset


def fused_targets():
    """Every level of score for every sample of each dataset (results/scores/{dataset}/selectit.parquet)."""
    return [layout.FUSED.format(dataset=d) for d in DATASETS]


def subset_targets():
    return sorted(
        {
            subset_path(d, m, p)
            for d in DATASETS
            for m in SELECTION["methods"]
            for p in SELECTION["proportions"]
        }
    )


# -------------------------------------------------- baselines of Table 1: IFD (Q2Q) and the judge
from selectit.errors import InputError
from selectit.ifd import IFD_PROMPT_SHA
from selectit.judge import judge_settings, result_settings

IFD = {**SELECTION["ifd"], "model": SELECTION["ifd"].get("model") or next(iter(MODELS))}
if IFD["model"] not in MODELS:
    raise InputError(
        f"config selection.ifd.model: {IFD['model']!r} is not a rater in models {list(MODELS)}"
    )
JUDGE = judge_settings(SELECTION.get("judge"), next(iter(MODELS)))
_prepared = set(MODELS) | {
    b for b, spec in config["training"]["bases"].items() if "rater" not in spec
}
if JUDGE["type"] == "hf" and prepared_model_name(JUDGE["model_dir"]) is not None:
    if prepared_model_name(JUDGE["model_dir"]) not in _prepared:
        raise InputError(
            f"config selection.judge.model_dir: {JUDGE['model_dir']} is not a rater or training base of this config"
        )


def ifd_shards(wildcards):
    return expand(
        layout.IFD_SHARD,
        dataset=wildcards.dataset,
        model=IFD["model"],
        shard=shards(wildcards.dataset),
    )


def judge_shards(wildcards):
    return expand(
        layout.JUDGE_SHARD,
        dataset=wildcards.dataset,
        shard=shards(wildcards.dataset),
    )


def judge_gpus():
    """A local judge's GPUs (a rater's folder: that rater's gpus); 0 for an OpenAI-compatible endpoint."""
    if JUDGE["type"] != "hf":
        return 0
    name = prepared_model_name(JUDGE["model_dir"])
    return 1 if name is None else model_gpus(name)


def judge_model(wildcards):
    """A local (hf) judge's prepared folder is an input of the judge jobs: re-preparing it reruns them."""
    return [f"{JUDGE['model_dir']}/model.json"] if JUDGE["type"] == "hf" else []


def baseline_scores(wildcards):
    """The merged IFD or judge table, for those two selection methods only."""
    kind = parse_method(wildcards.method).kind
    if kind in ("ifd", "judge"):
        return {kind: layout.BASELINE.format(dataset=wildcards.dataset, baseline=kind)}
    return {}


# ------------------------------------------------------------------- selection methods (selectit.methods)
# Every configured name is resolved now, so a bad name or a K above n_prompts (or a K the released
# variant cannot replay) stops `snakemake -n` with the key that holds it.
for _key, _names in [
    ("n_prompts (the levels fuse_scores gathers)", LEVELS),
    ("selection.methods", SELECTION["methods"]),
    ("training.methods", config["training"]["methods"]),
    *(
        (f"paper.{k}", (config.get("paper") or {}).get(k) or [])
        for k in ("methods", "strategies", "other_methods")
    ),
]:
    for _name in _names:
        try:
            resolve(_name, config)
        except InputError as exc:
            raise InputError(f"config {_key}: {exc}") from None
LEVEL_PATTERN = name_pattern(LEVELS)
# The selection settings a method may depend on (selectit.methods.Kind.settings): its select job's params.
SELECT_VALUES = {"seed": SELECTION["seed"], "threshold": JUDGE["threshold"]}
# The level settings (Kind.level_settings): the level_scores job's params (token_r, model_r only).
LEVEL_VALUES = {"token_prompt": token_prompt(config)}
resolve_weights(
    list(MODELS), {m: 1.0 for m in MODELS}, config["scoring"]["model_weights"]
)


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
    m = resolve(wildcards.method, config)
    d = wildcards.dataset
    if m.spec.source == "token":
        sources = [layout.TOKEN.format(dataset=d, model=r) for r in MODELS]
    else:
        sources = [layout.sentence(d, r, m.k, m.alpha) for r in MODELS]
    return {"sources": sources, "infos": list(model_infos(wildcards).values())}


def levels_read(methods):
    """The score levels a list of methods reads, with the configured ones that fuse_scores gathers."""
    out = set(LEVELS)
    for m in methods:
        reads = parse_method(m).spec.reads
        out |= (
            {m}
            if reads == "level"
            else ({"selectit"} if reads == "selectit" else set())
        )
    return sorted(out)


def sentence_points(levels):
    """(k, alpha file name) of every sentence file those levels read."""
    return sorted(
        {
            (m.k, layout.alpha_name(m.alpha))
            for m in (resolve(name, config) for name in levels)
            if m.spec.source == "sentence"
        }
    )


def fused_inputs(wildcards):
    d, k, alpha = wildcards.dataset, config["n_prompts"], config["scoring"]["alpha"]
    return {
        "samples": layout.SAMPLES.format(dataset=d),
        "token": [layout.TOKEN.format(dataset=d, model=r) for r in MODELS],
        "sentence": [layout.sentence(d, r, k, alpha) for r in MODELS],
        "levels": [layout.LEVEL.format(dataset=d, method=m) for m in LEVELS],
    }


def method_scores(dataset, method):
    """The score table a method selects by (its declaration's `reads`), or None."""
    reads = parse_method(method).spec.reads
    if reads == "level":
        return layout.LEVEL.format(dataset=dataset, method=method)
    if reads == "selectit":
        return layout.LEVEL.format(dataset=dataset, method="selectit")
    if reads in ("ifd", "judge"):
        return layout.BASELINE.format(dataset=dataset, baseline=reads)
    return None


def selection_inputs(wildcards):
    d = wildcards.dataset
    scores = method_scores(d, wildcards.method)
    return {
        "samples": layout.SAMPLES.format(dataset=d),
        "report": layout.DATA_REPORT.format(dataset=d),
        **({"scores": scores} if scores else {}),
    }


# ---------------------------------------------------------------------- the selection audit (selectit.audit)
from selectit import audit as _audit

AUDIT_SETTINGS = _audit.audit_settings(config)
AUDIT_PLANS = {
    spec["canaries_of"]: _audit.plan(config, spec["canaries_of"])
    for spec in AUDITS.values()
}


def audit_inputs(wildcards):
    """The audit of a dataset reads its samples and its canaries, every score file of the scorers for both,
    and the data's rating shards (the raters' score-token mass)."""
    d = wildcards.dataset
    files = [s[key] for s in AUDIT_PLANS[d] for key in ("real", "canary") if s[key]]
    return {
        "samples": layout.SAMPLES.format(dataset=d),
        "canaries": layout.SAMPLES.format(dataset=d + _audit.SUFFIX),
        "scores": sorted(set(files)),
        "shards": dataset_rating_shards(d),
    }


def audit_targets():
    return [layout.AUDIT.format(dataset=d) for d in AUDIT_PLANS]


# ------------------------------------------------------------------------ training and evaluation
import os

from selectit import resources
from selectit.evaluation import BENCHMARKS
from selectit.evaluation.cli import check_evaluation, check_settings, data_files
from selectit.training import base_settings as training_base_settings

TRAINING = config["training"]
EVALUATION = config["evaluation"]
BASES = TRAINING["bases"]


def base_model(base):
    """Prepared model folder name of a training base: the rater it names, or its own name."""
    return BASES[base].get("rater", base)


def base_model_spec(base):
    """A training base's model spec (what prepare_model builds), without its training settings."""
    return {k: v for k, v in BASES[base].items() if k != "settings"}


def base_settings(base):
    """Training settings of one base: training.settings, then the base's own `settings` over them."""
    return training_base_settings(TRAINING, base)


for _base, _spec in BASES.items():
    if "rater" in _spec and _spec["rater"] not in MODELS:
        raise InputError(
            f"training base {_base!r} names rater {_spec['rater']!r}, which is not in models"
        )
    if (
        "rater" not in _spec
        and _base in MODELS
        and base_model_spec(_base) != model_source(MODELS[_base])
    ):
        raise InputError(
            f"training base {_base!r} has the name of a rater but another spec; use `{_base}: {{rater: {_base}}}`"
        )
for _benchmark, _settings in EVALUATION["settings"].items():
    try:
        check_settings(_benchmark, _settings)
    except InputError as _exc:
        raise InputError(f"config evaluation.settings.{_benchmark}: {_exc}") from None
# With data_dir resources/eval the evaluations read the files that rules/resources.smk downloads; until all
# are there, only the settings and the judge are checked, otherwise the data folder too.
EVAL_DOWNLOADS = (
    resources.files_for(EVALUATION["benchmarks"])
    if resources.is_download_dir(EVALUATION["data_dir"])
    else []
)
EVAL_DOWNLOAD_PATHS = "|".join(_re.escape(f.path) for f in resources.FILES)
if BASES:
    engines.check(EVALUATION["engine"], "config evaluation.engine")
    check_evaluation(
        EVALUATION["data_dir"],
        EVALUATION["benchmarks"],
        EVALUATION["settings"],
        data=all(
            os.path.isfile(f"{resources.DOWNLOAD_DIR}/{f.path}") for f in EVAL_DOWNLOADS
        ),
    )

# Every model prepare_model can build: the raters and the bases that give their own spec.
MODEL_SPECS = {
    **{b: base_model_spec(b) for b, spec in BASES.items() if "rater" not in spec},
    **{m: model_source(spec) for m, spec in MODELS.items()},
}
_judge = (EVALUATION["settings"].get("alpaca_eval") or {}).get("judge") or {}
_judge_dir = str(_judge.get("model_dir") or "").rstrip("/")
if (
    prepared_model_name(_judge_dir) is not None
    and prepared_model_name(_judge_dir) not in MODEL_SPECS
):
    raise InputError(
        f"the AlpacaEval judge {_judge_dir} is not a rater or training base of this config"
    )


wildcard_constraints:
    base="[A-Za-z0-9_.-]+",
    seed="[0-9]+",


def base_model_info(wildcards):
    return layout.MODEL_INFO.format(model=base_model(wildcards.base))


def _selected(wildcards):
    return checkpoints.select_subset.get(
        dataset=wildcards.dataset,
        method=wildcards.method,
        proportion=wildcards.proportion,
    ).output.alpaca


def plan_model_infos(wildcards):
    """model.json of every rater and base whose parameter count the plan must read (none given in paper.cost)."""
    thetas = ((config.get("paper") or {}).get("cost") or {}).get("thetas") or {}
    names = set(MODELS) | {base_model(b) for b in BASES}
    return [layout.MODEL_INFO.format(model=m) for m in sorted(names - set(thetas))]


def training_subset(wildcards):
    """The subset, by content: its file time is ignored (ancient) and its digest is a param, so a subset
    rewritten with the same records (a reorder, an edit that leaves the selection as it was) trains
    nothing again. select_subset is a checkpoint, so the digest is read after the subset is (re)written.
    """
    return ancient(_selected(wildcards))


def training_subset_digest(wildcards):
    return file_digest(_selected(wildcards))


def deepspeed_config(wildcards):
    path = base_settings(wildcards.base).get("deepspeed")
    return [path] if path else []


run_dir = layout.run_dir


def run_dirs(stage):
    return sorted(
        {
            run_dir(stage, b, d, m, p, s)
            for b in BASES
            for d in DATASETS
            for m in TRAINING["methods"]
            for p in TRAINING["proportions"]
            for s in TRAINING["seeds"]
        }
    )


def train_targets():
    return [f"{d}/train_result.json" for d in run_dirs("train")]


def eval_targets():
    return [f"{d}/{b}.json" for d in run_dirs("eval") for b in EVALUATION["benchmarks"]]


def eval_settings(benchmark):
    """The benchmark's settings, with the engine where it is not the default (so results made before the engine
    was a choice keep their params)."""
    settings = EVALUATION["settings"].get(benchmark) or {}
    if EVALUATION["engine"] != engines.DEFAULT:
        settings = {**settings, "engine": EVALUATION["engine"]}
    return settings


def eval_data(wildcards):
    """The benchmark's data files, so an edited file reruns its evaluations; in the download folder, the
    files the download rule fetches."""
    if EVAL_DOWNLOADS:
        return eval_download_targets(wildcards.benchmark)
    return data_files(wildcards.benchmark, EVALUATION["data_dir"])


def eval_download_targets(benchmark=None):
    """The download folder's files of one configured benchmark (all of them without one)."""
    return [
        f"{resources.DOWNLOAD_DIR}/{f.path}"
        for f in EVAL_DOWNLOADS
        if benchmark in (None, f.benchmark)
    ]


def eval_download_sha256(wildcards):
    return resources.entry(wildcards.path).sha256


def eval_judge(wildcards):
    """A local judge model (AlpacaEval's hf judge) prepared by the workflow is an input of its jobs."""
    judge = eval_settings(wildcards.benchmark).get("judge") or {}
    model_dir = str(judge.get("model_dir") or "").rstrip("/")
    if judge.get("type", "hf") == "hf" and model_dir.startswith(
        layout.MODEL_DIR.format(model="")
    ):
        return f"{model_dir}/model.json"
    return []


# ------------------------------------------------------------------ tables (rules/tables.smk, the registry)
from functools import cache
from pathlib import Path

from selectit.methods import label as method_label


@cache
def table_params(name):
    """Everything a table reads besides its input files: its title and caption, its declared view of the
    config, the labels of the methods it shows, and Table 9's plan settings."""
    spec = TABLES[name]
    extra = None
    if name == "table9":
        extra = {
            "expected": TABLE_EXPECTED_BENCHMARKS,
            "gpus": declared_gpus(workflow.rules),
            "skip": ["table", "tables_index"],
            "model_gpus": {m: model_gpus(m) for m in MODELS},
        }
    if name == "audit":
        extra = {"proportions": SELECTION["proportions"]}
    return {
        "title": spec.title,
        "caption": Path(f"{workflow.basedir}/report/tables/{name}.rst").read_text(),
        "view": table_view(config, TABLE_PAPER, spec.paper_keys),
        "labels": {m: method_label(m) for m in TABLE_METHODS.get(name, [])},
        "extra": extra,
    }
