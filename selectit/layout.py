"""Where every file of a run lies: one home for each path pattern and for the rules about names.

The rules (rules/*.smk) take their output patterns and input paths from here, and so do the tables and
figures (selectit.paper). A pattern has Snakemake wildcards in braces; the functions fill them in.
"""

from __future__ import annotations

from pathlib import Path

# --------------------------------------------------------------------------------------------- patterns
SAMPLES = "results/data/{dataset}/samples.parquet"
DATA_REPORT = "results/data/{dataset}/report.json"
MODEL_DIR = "results/models/{model}"
MODEL_INFO = "results/models/{model}/model.json"
RATING_SHARD = "results/ratings/{dataset}/{model}/{prompt}/{shard}.parquet"
LOGITS = "results/scores/{dataset}/{model}/logits.parquet"  # merged shards: every prompt's K logits
TOKEN = "results/scores/{dataset}/{model}/token.parquet"  # Eq. 2-3, every prompt
SENTENCE = "results/scores/{dataset}/{model}/sentence/k{k}-alpha{alpha}.parquet"  # Eq. 4, prompts 1..k
LEVEL = "results/scores/{dataset}/levels/{method}.parquet"  # one selection score per sample
FUSED = "results/scores/{dataset}/selectit.parquet"  # every level of the configured K and alpha
IFD_SHARD = "results/ifd/{dataset}/{model}/{shard}.parquet"
JUDGE_SHARD = "results/judge/{dataset}/{shard}.parquet"
BASELINE = "results/scores/{dataset}/{baseline}.parquet"  # baseline: ifd or judge
SUBSET = "results/subsets/{dataset}/{method}/{proportion}.json"
SUBSET_SHAREGPT = "results/subsets/{dataset}/{method}/{proportion}.sharegpt.json"
SUBSET_MANIFEST = "results/subsets/{dataset}/{method}/{proportion}.manifest.json"
RUN_DIR = "results/{stage}/{base}/{dataset}/{method}/{proportion}/seed{seed}"
TRAIN_RESULT = "results/train/{base}/{dataset}/{method}/{proportion}/seed{seed}/train_result.json"
EVAL_RESULT = "results/eval/{base}/{dataset}/{method}/{proportion}/seed{seed}/{benchmark}.json"
AUDIT = "results/audit/{dataset}/metrics.csv"  # the audit of one dataset by its canaries (selectit.audit)
EMBEDDINGS = "results/embeddings/{dataset}/{model}.parquet"
TABLE = "results/tables/{table}.{ext}"  # ext: csv, md, tex
PLAN = "results/plan/gpu_hours.{ext}"  # ext: csv, md; the planned GPU bill of the config in force (selectit.cost)
FIGURE = "figures/{figure}.{ext}"  # ext: pdf, png, csv
RELEASE_DIR = "results/release/{dataset}/{method}/{proportion}"


def _root(root: str | Path | None, path: str) -> str | Path:
    return path if root is None else Path(root) / path


def alpha_name(alpha: float) -> str:
    """How an alpha is written in a file name (the same value always gives the same name)."""
    return repr(float(alpha))


def sentence(dataset: str, model: str, k: int, alpha: float) -> str:
    return SENTENCE.format(dataset=dataset, model=model, k=int(k), alpha=alpha_name(alpha))


def subset_proportion(method: str, proportion: float) -> float:
    """The proportion a subset is named (and trained) at: `full` keeps everything, so always 1.0. The one
    place this rule is written."""
    return 1.0 if method == "full" else float(proportion)


def subset(dataset: str, method: str, proportion: float, root: str | Path | None = None,
           suffix: str = ".json") -> str | Path:
    """A subset (suffix .json), its ShareGPT copy (.sharegpt.json) or its manifest (.manifest.json)."""
    path = SUBSET.format(dataset=dataset, method=method, proportion=subset_proportion(method, proportion))
    return _root(root, path.removesuffix(".json") + suffix)


def manifest(dataset: str, method: str, proportion: float, root: str | Path | None = None) -> str | Path:
    return subset(dataset, method, proportion, root, ".manifest.json")


def run_dir(stage: str, base: str, dataset: str, method: str, proportion: float, seed: int,
            root: str | Path | None = None) -> str | Path:
    """`results/{stage}/...` of one fine-tuning run (stage: train or eval); like subsets, `full` is at 1.0."""
    return _root(root, RUN_DIR.format(stage=stage, base=base, dataset=dataset, method=method,
                                      proportion=subset_proportion(method, proportion), seed=seed))


def eval_result(base: str, dataset: str, method: str, proportion: float, seed: int, benchmark: str,
                root: str | Path | None = None) -> str | Path:
    return _root(root, f"{run_dir('eval', base, dataset, method, proportion, seed)}/{benchmark}.json")
