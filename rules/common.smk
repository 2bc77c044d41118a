# Names, paths and input functions used by every rule file. The logic is in selectit.workflow.
import json

from selectit.workflow import rating_prompts, shard_hashes
from selectit.data import shard_names

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
