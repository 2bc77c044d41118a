"""Merge rating shards with a completeness check, and fuse them into every level of SelectIT score.

`merge_model_ratings` refuses missing or duplicated (sample, prompt) keys and names them.
`fuse` computes token-level scores per (model, prompt), sentence-level per model, the model-level
SelectIT score, and the single-level selectors Token-R / Sentence-R / Model-R, all in one table so
that sweeps of alpha, K, weights or variant need no re-rating.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selectit import scoring
from selectit.errors import IncompleteRatingsError, InputError
from selectit.rating import write_parquet_atomic


def _describe(keys: Sequence[tuple[str, str]], limit: int = 10) -> str:
    shown = ", ".join(f"(sample {s}, prompt {p})" for s, p in list(keys)[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return shown + more


def merge_model_ratings(paths: Sequence[str | Path], sample_ids: Sequence[str], prompt_ids: Sequence[str],
                        model: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Logits of one model as an (N, P, K) array aligned to sample_ids x prompt_ids, plus the long table.

    Every (sample, prompt) key must appear exactly once across the shards."""
    frames = [pq.read_table(p).to_pandas() for p in paths]
    if not frames:
        raise IncompleteRatingsError(f"model {model!r}: no rating shards given")
    long = pd.concat(frames, ignore_index=True)
    keys = pd.MultiIndex.from_arrays([long["id"], long["prompt_id"]])
    dup = keys[keys.duplicated()].unique()
    if len(dup):
        raise IncompleteRatingsError(
            f"model {model!r}: {len(dup)} (sample, prompt) keys are rated more than once: {_describe(list(dup))}; "
            "delete the stale rating shards and rerun")
    expected = pd.MultiIndex.from_product([list(sample_ids), list(prompt_ids)])
    missing = expected.difference(keys)
    extra = keys.difference(expected)
    if len(missing) or len(extra):
        parts = []
        if len(missing):
            parts.append(f"{len(missing)} missing (sample, prompt, model={model}) keys: {_describe(list(missing))}")
        if len(extra):
            parts.append(f"{len(extra)} unexpected keys not in the dataset or prompt set: {_describe(list(extra))}")
        raise IncompleteRatingsError(f"model {model!r}: " + "; ".join(parts))
    long = long.set_index(["id", "prompt_id"]).loc[expected].reset_index()
    k = len(long["logits"].iloc[0])
    logits = np.stack(long["logits"].to_numpy()).astype(np.float32).reshape(len(sample_ids), len(prompt_ids), k)
    return logits, long


def fuse(sample_ids: Sequence[str], logits: dict[str, np.ndarray], prompt_ids: Sequence[str],
         weights: dict[str, float], alpha: float, variant: str, n_prompts: int | None = None,
         token_level_prompt: int = 0, level_model: str | None = None) -> pd.DataFrame:
    """Every SelectIT score for every sample.

    logits: model -> (N, P, K). n_prompts: use prompts 1..n_prompts (Table 2's K sweep; None = all).
    Token-R uses prompt `token_level_prompt` of `level_model`; Sentence-R uses `level_model`
    (default: the model with the largest weight); Model-R fuses the models' token-level scores of
    that single prompt with the model weights; SelectIT is the model-level score (Eq. 5).
    """
    models = list(logits)
    p = len(prompt_ids) if n_prompts is None else n_prompts
    level_model = level_model or max(models, key=lambda m: weights[m])
    out = pd.DataFrame({"id": list(sample_ids)})
    sentence = {}
    token_first = {}
    for m in models:
        n, _, k = logits[m].shape
        tokens = scoring.token_level(logits[m][:, :p, :].reshape(n * p, k), variant).reshape(n, p)
        for j in range(p):
            out[f"token/{m}/{prompt_ids[j]}"] = tokens[:, j]
        sentence[m] = scoring.sentence_level(tokens, alpha)
        token_first[m] = tokens[:, token_level_prompt]
        out[f"sentence/{m}"] = sentence[m]
    w = [weights[m] for m in models]
    out["token_r"] = token_first[level_model]
    out["sentence_r"] = sentence[level_model]
    out["model_r"] = scoring.model_level(np.column_stack([token_first[m] for m in models]), w)
    out["selectit"] = scoring.model_level(np.column_stack([sentence[m] for m in models]), w)
    return out


# ------------------------------------------------------------------------------------ file-level steps


def _samples(samples_path: str | Path) -> pd.DataFrame:
    return pq.read_table(samples_path).to_pandas().sort_values("index").reset_index(drop=True)


def merge_model_files(rating_paths: Sequence[str | Path], samples_path: str | Path, prompt_ids: Sequence[str],
                      model: str, variant: str, logits_out: str | Path, token_out: str | Path) -> None:
    """Merge one model's rating shards (checked complete) into logits.parquet and token.parquet."""
    samples = _samples(samples_path)
    logits, _ = merge_model_ratings(rating_paths, samples["id"], prompt_ids, model)
    n, p, k = logits.shape
    cols = {"id": samples["id"].tolist()}
    for j, pid in enumerate(prompt_ids):
        cols[pid] = list(logits[:, j, :])
    write_parquet_atomic(pa.table(cols), logits_out, {"model": model, "prompt_ids": list(prompt_ids), "k": k})
    tokens = scoring.token_level(logits.reshape(n * p, k), variant).reshape(n, p)
    tcols = {"id": samples["id"].tolist(), **{pid: tokens[:, j] for j, pid in enumerate(prompt_ids)}}
    write_parquet_atomic(pa.table(tcols), token_out, {"model": model, "variant": variant})


def read_logits(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    table = pq.read_table(path)
    prompt_ids = [c for c in table.column_names if c != "id"]
    ids = table.column("id").to_pylist()
    arr = np.stack([np.stack(table.column(pid).to_numpy(zero_copy_only=False)) for pid in prompt_ids], axis=1)
    return ids, prompt_ids, arr.astype(np.float32)


def sentence_file(token_path: str | Path, alpha: float, out: str | Path) -> None:
    token = pq.read_table(token_path).to_pandas()
    prompts = [c for c in token.columns if c != "id"]
    sent = scoring.sentence_level(token[prompts].to_numpy(), alpha)
    write_parquet_atomic(pa.table({"id": token["id"], "sentence": sent}), out, {"alpha": alpha})


def resolve_weights(models: Sequence[str], thetas: dict[str, float], weights: str | dict[str, float]) -> dict[str, float]:
    """'param' -> theta / sum theta (Eq. 5); a mapping -> explicit weights (e.g. the released 7/20, 13/20, 70/90)."""
    if weights == "param":
        w = scoring.param_weights([thetas[m] for m in models])
        return dict(zip(models, w.tolist()))
    if isinstance(weights, dict):
        missing = [m for m in models if m not in weights]
        if missing:
            raise InputError(f"model_weights has no weight for models {missing}")
        return {m: float(weights[m]) for m in models}
    raise InputError(f"model_weights must be 'param' or a mapping model -> weight, got {weights!r}")


def fuse_files(samples_path: str | Path, logits_paths: dict[str, str | Path], weights: dict[str, float],
               alpha: float, variant: str, n_prompts: int | None = None, token_level_prompt: int = 0,
               level_model: str | None = None) -> pd.DataFrame:
    samples = _samples(samples_path)
    logits = {}
    prompt_ids: list[str] = []
    for model, path in logits_paths.items():
        ids, prompt_ids, arr = read_logits(path)
        if ids != samples["id"].tolist():
            raise IncompleteRatingsError(f"{path}: sample ids do not match {samples_path}; rerun the merge")
        logits[model] = arr
    scores = fuse(samples["id"], logits, prompt_ids, weights, alpha, variant, n_prompts, token_level_prompt,
                  level_model)
    scores.insert(1, "index", samples["index"].to_numpy())
    return scores


def weights_from_files(info_paths: dict[str, str | Path], model_weights: str | dict[str, float]) -> dict[str, float]:
    import json

    thetas = {m: json.loads(Path(p).read_text())["theta"] for m, p in info_paths.items()}
    return resolve_weights(list(info_paths), thetas, model_weights)


def fuse_to_file(samples_path: str | Path, logits_paths: dict[str, str | Path], info_paths: dict[str, str | Path],
                 scoring_cfg: dict, n_prompts: int | None, out: str | Path) -> pd.DataFrame:
    """The per-sample score table of the configured alpha / K / variant / weights (selectit.parquet)."""
    weights = weights_from_files(info_paths, scoring_cfg["model_weights"])
    scores = fuse_files(samples_path, logits_paths, weights, scoring_cfg["alpha"], scoring_cfg["variant"], n_prompts)
    meta = {"weights": weights, **{k: scoring_cfg[k] for k in ("alpha", "variant")}, "n_prompts": n_prompts}
    write_parquet_atomic(pa.Table.from_pandas(scores, preserve_index=False), out, meta)
    return scores
