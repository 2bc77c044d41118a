"""Sample embeddings for the t-SNE figure: the last layer's hidden states of a rater model, mean-pooled over
the tokens of instruction + response (padding and special tokens such as BOS left out).

Rows are batched by token length under a token budget (``selectit.batching.plan_batches``) and right-padded, so
with causal attention a row's real tokens never see its padding: a batch gives the same vectors as one row at
a time, up to floating-point rounding.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selectit.atomic import write_parquet_atomic
from selectit.batching import plan_batches
from selectit.errors import InputError
from selectit.host import prepare_cpu_threads
from selectit.models import load_prepared, parse_dtype, read_model_info


@dataclass
class EncodedText:
    input_ids: list[int]
    pooled: list[int]  # 1 where the token belongs to the text (pooled), 0 for special tokens


def embedding_text(instruction: str, response: str) -> str:
    """The text embedded for one sample: its instruction, a newline, its response."""
    return instruction + "\n" + response


def encode_texts(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[EncodedText]:
    """Token ids (the tokenizer's special tokens included, as the model expects) cut to max_length tokens."""
    if max_length < 2:
        raise InputError(f"embedding max_length must be at least 2, got {max_length}")
    if not texts:
        return []
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, return_special_tokens_mask=True)
    return [EncodedText(list(ids), [1 - int(s) for s in special])
            for ids, special in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True)]


def mean_pool(hidden: Any, weights: Any) -> Any:
    """Mean of hidden (B, T, H) over the positions where weights (B, T) is 1."""
    weights = weights.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def embed_batch(model: Any, rows: Sequence[EncodedText], pad_id: int) -> np.ndarray:
    """(len(rows), H) float32 mean-pooled last-layer hidden states of one right-padded batch."""
    import torch

    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    pooled = torch.zeros((len(rows), width), dtype=torch.long)
    for b, r in enumerate(rows):
        n = len(r.input_ids)
        ids[b, :n] = torch.tensor(r.input_ids)
        attention[b, :n] = 1
        pooled[b, :n] = torch.tensor(r.pooled)
    device = next(model.parameters()).device
    ids, attention, pooled = ids.to(device), attention.to(device), pooled.to(device)
    with torch.inference_mode():
        # the decoder alone: its last hidden state (after the final norm), no LM head
        hidden = model.get_decoder()(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
        vectors = mean_pool(hidden.float(), pooled)
    return vectors.cpu().numpy().astype(np.float32)


def embed_texts(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, token_budget: int = 8192,
                max_rows: int = 256) -> tuple[np.ndarray, dict[str, Any]]:
    """(len(texts), H) embeddings in the order of `texts`, and run statistics."""
    start = time.perf_counter()
    rows = encode_texts(tokenizer, texts, max_length)
    empty = [i for i, r in enumerate(rows) if not any(r.pooled)]
    if empty:
        raise InputError(f"{len(empty)} texts have no tokens to pool (rows {empty[:10]})")
    pad = tokenizer.pad_token_id
    pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
    batches = plan_batches([len(r.input_ids) for r in rows], token_budget, max_rows)
    hidden_size = model.get_decoder().config.hidden_size
    out = np.full((len(rows), hidden_size), np.nan, dtype=np.float32)
    padded = 0
    for batch in batches:
        out[batch] = embed_batch(model, [rows[i] for i in batch], pad_id)
        padded += len(batch) * max(len(rows[i].input_ids) for i in batch)
    if not np.isfinite(out).all():
        bad = np.flatnonzero(~np.isfinite(out).all(axis=1))
        raise InputError(f"non-finite embeddings for rows {bad[:10].tolist()}; try dtype fp32")
    tokens = sum(len(r.input_ids) for r in rows)
    stats = {"rows": len(rows), "tokens": tokens, "padded_tokens": padded, "batches": len(batches),
             "rows_at_max_length": sum(len(r.input_ids) >= max_length for r in rows),
             "seconds": round(time.perf_counter() - start, 3)}
    return out, stats


def embed_samples_file(model_dir: str | Path, samples_path: str | Path, out_path: str | Path, max_length: int,
                       token_budget: int = 8192, dtype: str | None = "auto", threads: int | None = None,
                       gpus: int = 1) -> dict[str, Any]:
    """Embed every sample of samples.parquet with a prepared model; write id + vector atomically."""
    prepare_cpu_threads(threads)  # before torch loads: OpenMP reads its settings once

    info = read_model_info(model_dir)
    samples = pq.read_table(samples_path).to_pandas()
    missing = [c for c in ("id", "instruction", "response") if c not in samples.columns]
    if missing:
        raise InputError(f"{samples_path}: columns {missing} are missing")
    model, tokenizer = load_prepared(model_dir, dtype=parse_dtype(dtype), gpus=gpus)
    texts = [embedding_text(i, r) for i, r in zip(samples["instruction"], samples["response"], strict=True)]
    vectors, stats = embed_texts(model, tokenizer, texts, max_length, token_budget)
    table = pa.table({"id": pa.array(samples["id"].tolist(), pa.string()),
                      "vector": pa.array(list(vectors), pa.list_(pa.float32()))})
    meta = {"model": info["name"], "model_fingerprint": info["fingerprint"], "max_length": max_length,
            "dtype": str(model.dtype), "pooling": "mean over text tokens of the last hidden state",
            "dim": int(vectors.shape[1])}
    write_parquet_atomic(table, out_path, meta)
    return {**stats, **meta}


def read_embeddings(path: str | Path) -> pd.DataFrame:
    """id + vector (a float32 array per row) of an embeddings file."""
    table = pq.read_table(path)
    for column in ("id", "vector"):
        if column not in table.column_names:
            raise InputError(f"{path}: column {column!r} is missing; rerun embed_samples")
    return table.to_pandas()
