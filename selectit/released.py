"""A replay of the released code's rating loop, for throughput and agreement benchmarks (not used by the pipeline).

What it replays: ``self_reflection/sentence_level.py`` (and the same loop in ``token_level.py`` /
``model_level.py``) of Blue-Raincoat/SelectIT @ 4813250, as summarised in DESIGN.md §3 ("How the released code
differs", item 7) and checked against that file:

- the rating strings are built sample-major (for each sample, prompt lines 1..P) with the exact released
  string (``selectit.prompts.build_rating_prompt``);
- each string is tokenised on its own (batch size 1, ``tokenizer(p, padding=True, return_tensors="pt")`` with
  ``padding_side="left"`` and EOS as pad token if there is none: the tokenizer adds BOS if it does so by default;
  no truncation, no max_length);
- ``model(**tokenized)`` under ``torch.no_grad()`` with the model's defaults: logits at *every* position
  (no ``logits_to_keep``), ``use_cache`` as the config says (a KV cache is built and thrown away);
- ``torch.softmax(logits[:, -1, :].float(), dim=-1)``: a full-vocabulary softmax in fp32 at the last position;
- the K score-token probabilities are read one by one with ``float(...)`` (a device sync each).

Deliberate differences, each in the released code's favour or needed to run it here:

- score-token ids come from ``selectit.prompts.score_token_ids`` (the released code hard-codes Llama-2's
  29896, 29906, 29941, 29946, 29945, which are wrong for any other vocabulary);
- the tokenizer is whatever the prepared folder holds (a fast tokenizer: prepared folders carry only
  ``tokenizer.json``); the released code asks for the slow one (``use_fast=False``), which is slower, so the
  timings here are an upper bound on the released loop's speed;
- a failing forward pass raises instead of being printed and skipped (skipping shifts every later score onto the
  wrong sample, DESIGN.md §3 item 5);
- the dtype is the caller's: the released code loads fp16 (``torch_dtype=torch.float16``), which is what a user
  gets on CUDA; on CPU fp16 matmuls are not a fair choice (no fast kernels), so the benchmark uses fp32 there.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from selectit.prompts import RatingPrompt, build_rating_prompt, score_token_ids


def released_dtype(device: str):
    """The dtype a user of the released code gets on this device: fp16 on CUDA, fp32 on CPU (see module doc)."""
    import torch

    return torch.float16 if str(device).startswith("cuda") else torch.float32


@dataclass
class ReleasedResult:
    probs: np.ndarray  # (N, P, K) full-vocabulary probabilities of the K score tokens, fp32 softmax
    n_tokens: np.ndarray  # (N, P) tokens per rating string (BOS included when the tokenizer adds it)
    seconds: float  # wall time of the whole loop, tokenisation included
    score_ids: list[int]

    @property
    def rows(self) -> int:
        return int(self.n_tokens.size)

    @property
    def tokens(self) -> int:
        return int(self.n_tokens.sum())


def released_rate(model: Any, tokenizer: Any, instructions: Sequence[str], responses: Sequence[str],
                  prompts: Sequence[RatingPrompt], k: int, model_name: str = "model",
                  progress: bool = False) -> ReleasedResult:
    """Rate every (sample, prompt) pair the way the released code does: one string at a time, full logits,
    full-vocabulary fp32 softmax at the last position. Returns the K score-token probabilities per pair."""
    import torch
    from tqdm import tqdm

    score_ids = score_token_ids(tokenizer, k, model_name)
    # as the released code: left padding, EOS as the pad token when there is none (restored on return)
    saved = (tokenizer.padding_side, tokenizer.pad_token)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    n, p = len(instructions), len(prompts)
    probs = np.full((n, p, k), np.nan, dtype=np.float32)
    n_tokens = np.zeros((n, p), dtype=np.int64)
    bar = tqdm(total=n * p, unit="row", disable=not progress, mininterval=2.0, desc=f"released {model_name}")
    start = time.perf_counter()
    for i, (instruction, response) in enumerate(zip(instructions, responses)):
        for j, prompt in enumerate(prompts):  # sample-major, as construction_rps builds the list
            text = build_rating_prompt(prompt.text, instruction, response)
            tokenized = tokenizer(text, padding=True, return_tensors="pt")
            input_ids = tokenized["input_ids"].to(device)
            attention_mask = tokenized["attention_mask"].to(device)
            with torch.no_grad():
                outputs = model(input_ids=input_ids, attention_mask=attention_mask)
                predictions = outputs[0]  # (1, T, V): logits at every position
                logits = predictions[:, -1, :]
                softmax_logits = torch.softmax(logits.float(), dim=-1)
                probs[i, j] = [float(softmax_logits[0][t]) for t in score_ids]
            n_tokens[i, j] = input_ids.shape[1]
            bar.update(1)
    seconds = time.perf_counter() - start
    bar.close()
    tokenizer.padding_side, tokenizer.pad_token = saved
    return ReleasedResult(probs=probs, n_tokens=n_tokens, seconds=seconds, score_ids=score_ids)
