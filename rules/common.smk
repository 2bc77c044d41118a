# Names, paths and input functions used by every rule file. The logic is in selectit.workflow.
import json

from selectit.workflow import rating_prompts, shard_hashes
from selectit.data import shard_names
from selectit.models import rater_gpus

DATASETS = config["datasets"]
MODELS = config["models"]
PROMPTS = rating_prompts(config)
PROMPT_BY_ID = {p.id: p for p in PROMPTS}
SELECTION = config["selection"]


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    prompt="p[0-9a-f]{10}",
    shard="shard[0-9]{3}",
    method="[a-z_]+(-alpha[0-9.]+)?(-k[0-9]+)?",
    proportion="[0-9.]+",


def model_gpus(model):
    """GPUs of a job that runs a rater for inference: its `gpus` (a model too large for one GPU is split), else 1."""
    return rater_gpus(MODELS.get(model))


def model_source(spec):
    """What prepare_model builds a model from: its spec without `gpus` (a run setting, which re-prepares nothing)."""
    return {k: v for k, v in spec.items() if k != "gpus"}


def prepared_model_name(folder):
    """The model a folder results/models/<name>[/...] is prepared for, else None (a folder elsewhere)."""
    prefix = "results/models/"
    folder = str(folder)
    return (
        folder.removeprefix(prefix).partition("/")[0]
        if folder.startswith(prefix)
        else None
    )


def shards(dataset):
    return shard_names(DATASETS[dataset]["n_shards"])


def dataset_source(wildcards):
    path = DATASETS[wildcards.dataset].get("path")
    return [path] if path else []


def rating_data_input(wildcards):
    """A local dataset file is read directly (ancient: its mtime alone triggers nothing; the shard
    hash param does); a Hub dataset goes through prepare_data."""
    path = DATASETS[wildcards.dataset].get("path")
    if path:
        return ancient(path)
    return f"results/data/{wildcards.dataset}/samples.parquet"


def shard_hash(wildcards):
    return shard_hashes(DATASETS[wildcards.dataset])[wildcards.shard]


def rating_shards(wildcards):
    return expand(
        "results/ratings/{dataset}/{model}/{prompt}/{shard}.parquet",
        dataset=wildcards.dataset,
        model=wildcards.model,
        prompt=[p.id for p in PROMPTS],
        shard=shards(wildcards.dataset),
    )


def model_logits(wildcards):
    return {m: f"results/scores/{wildcards.dataset}/{m}/logits.parquet" for m in MODELS}


def model_infos(wildcards):
    return {m: f"results/models/{m}/model.json" for m in MODELS}


def subset_path(dataset, method, proportion):
    """`full` keeps everything, so its subset is always named 1.0 whatever the proportion."""
    proportion = 1.0 if method == "full" else proportion
    return f"results/subsets/{dataset}/{method}/{proportion}.json"


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
        "results/ifd/{dataset}/{model}/{shard}.parquet",
        dataset=wildcards.dataset,
        model=IFD["model"],
        shard=shards(wildcards.dataset),
    )


def judge_shards(wildcards):
    return expand(
        "results/judge/{dataset}/{shard}.parquet",
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
    method = wildcards.method.split("-")[0]
    if method in ("ifd", "judge"):
        return {method: f"results/scores/{wildcards.dataset}/{method}.parquet"}
    return {}


def judge_threshold(wildcards):
    """A param of the judge subsets only, so a threshold edit reruns nothing else."""
    return JUDGE["threshold"] if wildcards.method == "judge" else None


# ------------------------------------------------------------------------ training and evaluation
from selectit.errors import InputError
from selectit.evaluation import BENCHMARKS
from selectit.evaluation.cli import check_settings, data_files

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
    return {**TRAINING["settings"], **(BASES[base].get("settings") or {})}


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
    check_settings(_benchmark, _settings)

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
    return f"results/models/{base_model(wildcards.base)}/model.json"


def training_subset(wildcards):
    return subset_path(wildcards.dataset, wildcards.method, wildcards.proportion)


def deepspeed_config(wildcards):
    path = base_settings(wildcards.base).get("deepspeed")
    return [path] if path else []


def run_dir(stage, base, dataset, method, proportion, seed):
    """`results/{stage}/...` of one run (stage: train or eval). Like subset_path, `full` is always
    trained (and named) at proportion 1.0."""
    proportion = 1.0 if method == "full" else proportion
    return f"results/{stage}/{base}/{dataset}/{method}/{proportion}/seed{seed}"


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
    return EVALUATION["settings"].get(benchmark) or {}


def eval_data(wildcards):
    """The benchmark's data files, so an edited file reruns its evaluations."""
    return data_files(wildcards.benchmark, EVALUATION["data_dir"])


def eval_judge(wildcards):
    """A local judge model (AlpacaEval's hf judge) prepared by the workflow is an input of its jobs."""
    judge = eval_settings(wildcards.benchmark).get("judge") or {}
    model_dir = str(judge.get("model_dir") or "").rstrip("/")
    if judge.get("type", "hf") == "hf" and model_dir.startswith("results/models/"):
        return f"{model_dir}/model.json"
    return []
