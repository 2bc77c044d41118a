"""Merge rating shards with a completeness check, and fuse them into every level of SelectIT score.

`merge_model_ratings` refuses missing or duplicated (sample, prompt) keys and names them.
`fuse` computes token-level scores per (model, prompt), sentence-level per model, the model-level
SelectIT score, and the single-level selectors Token-R / Sentence-R / Model-R, all in one table so
that sweeps of alpha, K, weights or variant need no re-rating. Each level there and in the workflow's
level files (`level_file`) is computed by one function, `level_scores`, from its declaration
(selectit.methods: ``source``, ``fused``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selectit import scoring
from selectit.atomic import write_parquet_atomic
from selectit.errors import IncompleteRatingsError, InputError
from selectit.methods import KINDS, LEVELS, parse


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

    logits: model -> (N, P, C). n_prompts: use prompts 1..n_prompts (Table 2's K sweep; None = all); under
    the released variant at n_prompts != C the sentence level replays the released code's use of K as the
    number of score classes (scoring.released_token_level). Token-R uses prompt `token_level_prompt`
    (0-based) of `level_model`; Sentence-R uses `level_model` (default: the model with the largest weight);
    Model-R fuses the models' token-level scores of that single prompt with the model weights; SelectIT is the
    model-level score (Eq. 5). The levels are `level_scores`'s, the workflow's level files' function.
    """
    models = list(logits)
    p = len(prompt_ids) if n_prompts is None else n_prompts
    out = pd.DataFrame({"id": list(sample_ids)})
    per_source: dict[str, dict[str, np.ndarray]] = {"sentence": {}, "token": {}}  # token: of the one prompt
    for m in models:
        n, _, k = logits[m].shape
        tokens = scoring.token_level(logits[m][:, :p, :].reshape(n * p, k), variant).reshape(n, p)
        for j in range(p):
            out[f"token/{m}/{prompt_ids[j]}"] = tokens[:, j]
        per_source["sentence"][m] = scoring.sentence_level(
            _released_k_tokens(logits[m], p) if _released_k(variant, p, k) else tokens, alpha)
        per_source["token"][m] = tokens[:, token_level_prompt]
        out[f"sentence/{m}"] = per_source["sentence"][m]
    for level in LEVELS:  # token_r, sentence_r, model_r, selectit
        out[level], _ = level_scores(level, per_source[KINDS[level].source], weights, level_model)
    return out


def _released_k(variant: str, k: int, classes: int) -> bool:
    """Whether the sentence level at K = k prompts needs the logits: the released code's k is also the number
    of score classes, which the token file (Eq. 2-3 over all classes) does not hold unless k = classes."""
    return variant == "released" and k != classes


def _released_k_tokens(logits: np.ndarray, k: int) -> np.ndarray:
    """(N, P, C) logits -> (N, k) token scores of prompts 1..k with the released code's k classes."""
    n, _, classes = logits.shape
    try:
        return scoring.released_token_level(logits[:, :k, :].reshape(n * k, classes), k).reshape(n, k)
    except ValueError as exc:
        raise InputError(f"scoring.variant 'released': {exc}") from None


# ------------------------------------------------------------------------------------ file-level steps


def read_samples(samples_path: str | Path) -> pd.DataFrame:
    """samples.parquet in sample order (its ``index`` column): the order every score table follows."""
    return pq.read_table(samples_path).to_pandas().sort_values("index").reset_index(drop=True)


def merge_model_files(rating_paths: Sequence[str | Path], samples_path: str | Path, prompt_ids: Sequence[str],
                      model: str, logits_out: str | Path) -> None:
    """Merge one model's rating shards (checked complete) into logits.parquet, aligned with the samples."""
    samples = read_samples(samples_path)
    logits, _ = merge_model_ratings(rating_paths, samples["id"], prompt_ids, model)
    k = logits.shape[2]
    cols = {"id": samples["id"].tolist()}
    for j, pid in enumerate(prompt_ids):
        cols[pid] = list(logits[:, j, :])
    write_parquet_atomic(pa.table(cols), logits_out, {"model": model, "prompt_ids": list(prompt_ids), "k": k})


def read_logits(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    table = pq.read_table(path)
    prompt_ids = [c for c in table.column_names if c != "id"]
    ids = table.column("id").to_pylist()
    arr = np.stack([np.stack(table.column(pid).to_numpy(zero_copy_only=False)) for pid in prompt_ids], axis=1)
    return ids, prompt_ids, arr.astype(np.float32)


RELEASED_WEIGHTS = (7 / 20, 13 / 20, 70 / 90)  # the released model_level.py's 7B, 13B, 70B weights (no sum to 1)


def resolve_weights(models: Sequence[str], thetas: dict[str, float], weights: str | dict[str, float]) -> dict[str, float]:
    """'param' -> theta / sum theta (Eq. 5); 'released' -> 7/20, 13/20, 70/90 by rater order (the released
    model_level.py, which takes exactly three raters); a mapping -> explicit weights."""
    if weights == "param":
        w = scoring.param_weights([thetas[m] for m in models])
        return dict(zip(models, w.tolist()))
    if weights == "released":
        if len(models) != len(RELEASED_WEIGHTS):
            raise InputError(f"scoring.model_weights 'released' gives 7/20, 13/20, 70/90 to exactly three raters in "
                             f"the order of models (the released model_level.py's 7B, 13B, 70B); this config has "
                             f"{len(models)}: {list(models)}; give a mapping rater -> weight instead")
        return dict(zip(models, RELEASED_WEIGHTS))
    if isinstance(weights, dict):
        missing = [m for m in models if m not in weights]
        if missing:
            raise InputError(f"scoring.model_weights has no weight for models {missing}")
        return {m: float(weights[m]) for m in models}
    raise InputError(f"scoring.model_weights must be 'param', 'released' or a mapping model -> weight, got {weights!r}")


def weights_from_files(info_paths: dict[str, str | Path], model_weights: str | dict[str, float]) -> dict[str, float]:
    import json

    thetas = {m: json.loads(Path(p).read_text())["theta"] for m, p in info_paths.items()}
    return resolve_weights(list(info_paths), thetas, model_weights)


# --------------------------------------------------------------- the scoring DAG, one file per level
# merge_model_files -> logits; token_file -> token (Eq. 2-3, once per rater); sentence_file -> sentence of
# prompts 1..K at alpha (Eq. 4, once per rater and (K, alpha) in use); level_file -> one selection score
# (Eq. 5 or the largest-weight rater); fused_file gathers the configured levels for the tables and figures.


def read_meta(path: str | Path) -> dict:
    import json

    raw = (pq.read_schema(path).metadata or {}).get(b"selectit")
    return json.loads(raw) if raw else {}


def token_file(logits_path: str | Path, variant: str, out: str | Path) -> None:
    """Token-level scores (Eq. 2-3) of every prompt of one rater."""
    ids, prompt_ids, arr = read_logits(logits_path)
    n, p, k = arr.shape
    tokens = scoring.token_level(arr.reshape(n * p, k), variant).reshape(n, p)
    meta = read_meta(logits_path)
    cols = {"id": ids, **{pid: tokens[:, j] for j, pid in enumerate(prompt_ids)}}
    write_parquet_atomic(pa.table(cols), out, {"model": meta.get("model"), "variant": variant,
                                               "prompt_ids": prompt_ids})


def sentence_file(token_path: str | Path, k: int, alpha: float, out: str | Path,
                  logits_path: str | Path | None = None) -> None:
    """Sentence-level scores (Eq. 4) of one rater over its prompts 1..k.

    With `logits_path` (the workflow gives it only under the released variant at k != score classes) the
    token scores of prompts 1..k are recomputed from the logits as the released code does at that k
    (k classes summed, divided by k - 1: scoring.released_token_level) instead of read from the token file."""
    token = pq.read_table(token_path).to_pandas()
    prompts = [c for c in token.columns if c != "id"]
    if not 1 <= k <= len(prompts):
        raise InputError(f"{token_path}: K = {k} prompts asked for, {len(prompts)} rated")
    meta = read_meta(token_path)
    extra = {}
    if logits_path is None:
        tokens = token[prompts[:k]].to_numpy()
    else:
        if meta.get("variant") != "released":
            raise InputError(f"{token_path}: the released K replay needs released token scores, got variant "
                             f"{meta.get('variant')!r}; rerun token_scores")
        ids, logit_prompts, arr = read_logits(logits_path)
        if ids != token["id"].tolist() or logit_prompts != prompts:
            raise IncompleteRatingsError(f"{logits_path}: samples or prompts do not match {token_path}; rerun the merge")
        tokens = _released_k_tokens(arr, k)
        extra = {"score_classes": k}
    sent = scoring.sentence_level(tokens, alpha)
    write_parquet_atomic(pa.table({"id": token["id"], "sentence": sent}), out,
                         {**meta, "alpha": alpha, "k": k, "prompt_ids": prompts[:k], **extra})


def _aligned(paths: dict[str, str | Path], position: int = 1) -> tuple[list[str], dict[str, np.ndarray]]:
    """The per-rater score column at 1-based `position` among each file's score columns, checked aligned."""
    ids, out = None, {}
    for model, path in paths.items():
        table = pq.read_table(path).to_pandas()
        these = table["id"].tolist()
        if ids is not None and these != ids:
            raise IncompleteRatingsError(f"{path}: sample ids do not match the other raters' score files")
        ids = these
        columns = [c for c in table.columns if c != "id"]
        if not 1 <= position <= len(columns):
            raise InputError(f"{path}: score column {position} asked for (scoring.token_prompt), "
                             f"{len(columns)} there")
        out[model] = table[columns[position - 1]].to_numpy()
    return ids, out


def level_scores(kind: str, per_model: dict[str, np.ndarray], weights: dict[str, float],
                 level_model: str | None = None) -> tuple[np.ndarray, str | None]:
    """One selection score from the raters' token (one prompt) or sentence scores: Eq. 5 with the
    weights for the fused kinds (model_r, selectit), else the rater `level_model` (default: the one with the
    largest weight), which is returned too (None for the fused kinds)."""
    models = list(per_model)
    if KINDS[kind].fused:
        return scoring.model_level(np.column_stack([per_model[m] for m in models]),
                                   [weights[m] for m in models]), None
    level_model = level_model or max(models, key=lambda m: weights[m])
    return per_model[level_model], level_model


def level_file(method: str, source_paths: dict[str, str | Path], info_paths: dict[str, str | Path],
               model_weights: str | dict[str, float], out: str | Path, token_prompt: int = 1) -> None:
    """The selection score of one score-level method (token_r, sentence_r, model_r, selectit and their
    sweeps) from the raters' token or sentence files: results/scores/{dataset}/levels/{method}.parquet.
    token_r and model_r read prompt line `token_prompt` (1-based, selectit.methods.token_prompt)."""
    kind = parse(method).kind
    from_token = KINDS[kind].source == "token"
    weights = weights_from_files(info_paths, model_weights)
    ids, per_model = _aligned(source_paths, token_prompt if from_token else 1)
    score, level_model = level_scores(kind, per_model, weights)
    metas = {m: read_meta(p) for m, p in source_paths.items()}
    import json

    infos = {m: json.loads(Path(p).read_text()) for m, p in info_paths.items()}
    first = next(iter(metas.values()))
    meta = {"method": method, "weights": weights, "level_model": level_model,
            "model_fingerprints": {m: i["fingerprint"] for m, i in infos.items()},
            "variant": first.get("variant"), "alpha": first.get("alpha"), "k": first.get("k"),
            "prompt_ids": (first.get("prompt_ids", [])[token_prompt - 1:token_prompt] if from_token
                           else first.get("prompt_ids")),
            **({"token_prompt": token_prompt} if from_token else {}),
            **({"score_classes": first["score_classes"]} if "score_classes" in first else {})}
    write_parquet_atomic(pa.table({"id": ids, "score": score}), out, meta)


def fused_file(samples_path: str | Path, token_paths: dict[str, str | Path], sentence_paths: dict[str, str | Path],
               level_paths: dict[str, str | Path], k: int, out: str | Path) -> pd.DataFrame:
    """The per-sample table of every level at the configured K and alpha (selectit.parquet), gathered from
    the files of the levels: nothing is recomputed here."""
    samples = read_samples(samples_path)
    frame = pd.DataFrame({"id": samples["id"].tolist(), "index": samples["index"].to_numpy()})
    ids = frame["id"].tolist()

    def check(path, table):
        if table["id"].tolist() != ids:
            raise IncompleteRatingsError(f"{path}: sample ids do not match {samples_path}; rerun the merge")

    meta = {}
    for model in token_paths:
        token = pq.read_table(token_paths[model]).to_pandas()
        check(token_paths[model], token)
        for pid in [c for c in token.columns if c != "id"][:k]:
            frame[f"token/{model}/{pid}"] = token[pid].to_numpy()
        sent = pq.read_table(sentence_paths[model]).to_pandas()
        check(sentence_paths[model], sent)
        frame[f"sentence/{model}"] = sent["sentence"].to_numpy()
    for level, path in level_paths.items():
        table = pq.read_table(path).to_pandas()
        check(path, table)
        frame[level] = table["score"].to_numpy()
        meta = read_meta(path) if level == "selectit" else meta
    write_parquet_atomic(pa.Table.from_pandas(frame, preserve_index=False), out,
                         {"weights": meta.get("weights"), "alpha": meta.get("alpha"), "variant": meta.get("variant"),
                          "n_prompts": k})
    return frame
