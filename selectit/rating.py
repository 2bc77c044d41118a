"""The rater: score-token lookup, tokenisation with middle truncation, batched last-position logits.

For each (sample, prompt) row it stores ``id``, ``prompt_id``, the K score-token ``logits`` (float32),
``score_mass`` (full-vocabulary probability on the K tokens), ``n_tokens`` and ``truncated``.
Batches are built from rows sorted by token length under a token budget (left padding); only the
last position's hidden state goes through the LM head, so no batch x seq x vocab tensor exists.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selectit.atomic import write_parquet_atomic
from selectit.engines.base import Engine
from selectit.engines.hf import HFEngine
from selectit.host import empty_cache, is_oom, prepare_cpu_threads
from selectit.errors import InputError, NonFiniteLogitsError
from selectit.prompts import ANSWER_TAIL, RatingPrompt, build_rating_prompt, cut_middle, prompt_head

RATING_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("prompt_id", pa.string()),
    ("logits", pa.list_(pa.float32())),
    ("score_mass", pa.float32()),
    ("n_tokens", pa.int32()),
    ("truncated", pa.bool_()),
])


def score_token_ids(tokenizer: Any, k: int, model_name: str = "model") -> list[int]:
    """Id of the token that encodes digit j after a newline, for j = 1..k.

    It is the last token of tokenize("\\n" + "j"), which must decode to exactly "j". A digit that is
    not a single token stops with an error naming the model and the digit.
    """
    if not 2 <= k <= 9:
        raise InputError(f"K (number of score levels) must be between 2 and 9, got {k}")
    ids = []
    for digit in range(1, k + 1):
        pieces = tokenizer("\n" + str(digit), add_special_tokens=False)["input_ids"]
        token = pieces[-1] if pieces else None
        if token is None or tokenizer.decode([token]) != str(digit):
            decoded = [tokenizer.decode([t]) for t in pieces]
            raise InputError(
                f"model {model_name!r}: the digit {digit} is not a single token after a newline "
                f"(tokenised as {decoded}); SelectIT needs single-token scores 1..{k}"
            )
        ids.append(int(token))
    if len(set(ids)) != k:
        raise InputError(f"model {model_name!r}: score tokens are not distinct: {ids}")
    return ids


@dataclass
class EncodedRow:
    position: int  # row position in the shard
    input_ids: list[int]
    truncated: bool


def encode_row(tokenizer: Any, prompt: RatingPrompt, instruction: str, response: str,
               max_length: int) -> tuple[list[int], bool]:
    """Token ids of the rating prompt; if longer than max_length, cut the middle of the response (then of
    the instruction), never the rating-prompt head nor the "The answer is: \\n" tail."""
    ids = tokenizer(build_rating_prompt(prompt.text, instruction, response))["input_ids"]
    if len(ids) <= max_length:
        return ids, False
    # Encode the pieces separately so the fixed parts are kept whole.
    head = tokenizer(prompt.text + "\n" + "Instruction:")["input_ids"]
    instr = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    mid = tokenizer("\n" + "Response:", add_special_tokens=False)["input_ids"]
    resp = tokenizer(response, add_special_tokens=False)["input_ids"]
    tail = tokenizer(ANSWER_TAIL, add_special_tokens=False)["input_ids"]
    fixed = len(head) + len(mid) + len(tail)
    budget = max_length - fixed
    if budget < 2:
        raise InputError(f"max_length={max_length} is too small for the rating prompt itself ({fixed} tokens)")
    instr_keep = min(len(instr), max(budget // 4, budget - len(resp)))
    resp_keep = budget - instr_keep
    return head + cut_middle(instr, instr_keep) + mid + cut_middle(resp, resp_keep) + tail, True


def plan_batches(lengths: Sequence[int], token_budget: int, max_rows: int = 512,
                 max_stretch: float = 1.25) -> list[list[int]]:
    """Group row positions into batches of similar length: rows sorted by length, each batch padded
    to its longest row, holding at most token_budget padded tokens and max_rows rows, and its longest
    row at most max_stretch times its shortest (bounds the padding)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]  # sorted ascending, so the new row is the longest
        too_wide = current and longest > max_stretch * lengths[current[0]] + 8
        if current and (longest * (len(current) + 1) > token_budget or len(current) >= max_rows or too_wide):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


# Row batching of the rater: a batch costs its padded tokens plus BATCH_COST_TOKENS (the fixed cost of one forward
# pass: kernel launches, the prefix concatenation, the mask; ~10 ms eager on 2 CPU cores, about 16 tokens of work there)
BATCH_COST_TOKENS = 32
MAX_PADDING = 0.05  # the most padding (share of the padded tokens run) plan_low_padding leaves


def plan_low_padding(lengths: Sequence[int], token_budget: int, max_rows: int = 512,
                     max_padding: float = MAX_PADDING, batch_cost: float = BATCH_COST_TOKENS) -> list[list[int]]:
    """Group row positions into batches of contiguous sorted lengths, each holding at most token_budget padded tokens
    (a longer row goes alone) and max_rows rows, so that padded tokens + batch_cost x batches is least (an exact
    dynamic programme over the sorted rows). If the padding left is more than max_padding of the padded tokens, the
    batch cost is halved until it is not (cost 0 pads nothing: rows of one length per batch)."""
    import numpy as np

    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    sorted_len = np.array([lengths[i] for i in order], dtype=np.int64)
    n = len(order)
    if not n:
        return []
    real = int(sorted_len.sum())
    cost = float(batch_cost)
    while True:
        best = np.zeros(n + 1)  # best[j]: least cost of batching the j shortest rows
        start = np.zeros(n + 1, dtype=np.int64)
        for j in range(1, n + 1):
            width = int(sorted_len[j - 1])  # the batch ending at row j-1 is padded to its length
            most = min(max_rows, max(1, token_budget // max(width, 1)), j)
            firsts = np.arange(j - most, j)
            total = best[firsts] + width * (j - firsts) + cost
            k = int(np.argmin(total))
            best[j], start[j] = total[k], firsts[k]
        bounds = []
        j = n
        while j > 0:
            bounds.append((int(start[j]), j))
            j = int(start[j])
        bounds.reverse()
        padded = sum(int(sorted_len[b - 1]) * (b - a) for a, b in bounds)
        if cost < 0.5 or 1 - real / max(padded, 1) <= max_padding:
            return [order[a:b] for a, b in bounds]
        cost /= 2


def fixed_batches(n: int, size: int) -> list[range]:
    """Row indices 0..n-1 cut, in their order, into batches of ``size`` (the last may be shorter)."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """1 - real tokens / padded tokens of a batch plan (each batch padded to its longest row)."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded if padded else 0.0


@dataclass
class RatingStats:
    rows: int = 0
    tokens: int = 0  # real (unpadded) tokens
    padded_tokens: int = 0  # tokens run through the model, padding included
    computed_tokens: int = 0  # real tokens run through the model (rows minus a reused prefix)
    seconds: float = 0.0
    batches: int = 0
    oom_splits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "tokens": self.tokens, "padded_tokens": self.padded_tokens,
            "computed_tokens": self.computed_tokens,
            "seconds": round(self.seconds, 3), "batches": self.batches, "oom_splits": self.oom_splits,
            "rows_per_s": self.rows / self.seconds if self.seconds else None,
            "tokens_per_s": self.tokens / self.seconds if self.seconds else None,
            "padding_fraction": 1 - self.computed_tokens / self.padded_tokens if self.padded_tokens else 0.0,
            **self.extra,
        }


# Auto compile: the work, 2 x (non-embedding parameters) x tokens run (a reused prefix left out), from which compiling
# is repaid. CPU: 3e13 is ~140k run tokens of SmolLM2-135M, ~60 s of eager rating on 2 AMX cores, where compiling
# costs 7-17 s (2-6 s for Gemma-3) and saves ~25 % (benchmarks/measured/rating_cpu*.json). CUDA: 1e16 is ~50 s of
# eager work on an H100 (a 7B model on ~700k tokens); an H200 rates a 240k-token shard of a 270M model in under a
# second, where a cold compile (~9 s) would only cost.
COMPILE_MIN_FLOPS = {"cpu": 3e13, "cuda": 1e16}


def _work_flops(model: Any, tokens: int) -> float:
    """2 x the parameters outside the input embedding x tokens: the matmul work of running `tokens` tokens."""
    params = sum(p.numel() for p in model.parameters())
    try:
        params -= model.get_input_embeddings().weight.numel()
    except AttributeError:
        pass
    return 2.0 * params * tokens


PREFIX_ATTENTION = "selectit_prefix"  # the attention implementation the rater switches an SDPA model to
# On a CPU, heads at least this wide run as two matmuls around an fp32 softmax instead of SDPA's flash kernel: for
# Gemma-3 (head_dim 256) that is about 2x faster on 2 AVX512-BF16 cores, for SmolLM2 (64) about 1.4x slower.
MANUAL_ATTENTION_MIN_HEAD_DIM = 128


def _manual_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                      scaling: float | None) -> tuple[Any, None]:
    """Attention as matmul, fp32 softmax, matmul; grouped-query heads are folded into the query length, so keys and
    values are never repeated. ``attention_mask``: boolean (True = attend) or additive, broadcast over heads; None
    is causal (top-left, as SDPA's is_causal). Masked scores are set to the lowest fp32 number, not -inf, so a
    query that sees nothing (a padding position) gets finite values and never spreads NaN."""
    import torch

    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    scores = torch.matmul(query.reshape(batch, kv_heads, group * q_len, dim), key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, group, q_len, kv_len).float().mul_(scale)
    if attention_mask is None:
        attention_mask = torch.ones((q_len, kv_len), dtype=torch.bool, device=query.device).tril()
    if attention_mask.dim() == 4:  # (batch or 1, 1 or heads, q, kv) -> broadcast over (kv_heads, group)
        mask = attention_mask
        mask = mask[:, :, None] if mask.shape[1] == 1 else mask.view(mask.shape[0], kv_heads, group, q_len, kv_len)
    else:
        mask = attention_mask
    if mask.dtype == torch.bool:
        scores.masked_fill_(~mask, torch.finfo(torch.float32).min)
    else:
        scores.add_(mask.float()).clamp_(min=torch.finfo(torch.float32).min)
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs.view(batch, kv_heads, group * q_len, kv_len), value)
    out = out.view(batch, heads, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return out, None


def _register_prefix_attention() -> None:
    """Register PREFIX_ATTENTION with transformers: SDPA attention that puts a module's cached prompt-prefix keys
    and values (``module._selectit_prefix``) in front of the batch's own, and, while ``module._selectit_capture``
    is a list, appends the keys and values it sees to it (how the prefix pass records them). With neither set it is
    plain SDPA. Masks are built as for SDPA."""
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if PREFIX_ATTENTION in AttentionInterface._global_mapping:
        return

    def prefix_attention(module, query, key, value, attention_mask, **kwargs):
        capture = getattr(module, "_selectit_capture", None)
        if capture is not None:
            capture.append((key, value))
        prefix = getattr(module, "_selectit_prefix", None)
        if prefix is not None:
            batch = key.shape[0]
            key = torch.cat([prefix[0].expand(batch, -1, -1, -1), key], dim=2)
            value = torch.cat([prefix[1].expand(batch, -1, -1, -1), value], dim=2)
        if (query.device.type == "cpu" and query.shape[-1] >= MANUAL_ATTENTION_MIN_HEAD_DIM
                and kwargs.get("softcap") is None and query.shape[1] % key.shape[1] == 0
                and (attention_mask is not None or query.shape[2] == key.shape[2])):
            return _manual_attention(module, query, key, value, attention_mask, kwargs.get("scaling"))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(PREFIX_ATTENTION, prefix_attention)
    AttentionMaskInterface.register(PREFIX_ATTENTION, sdpa_mask)


def _attention_modules(model: Any) -> list[Any]:
    """Each decoder layer's self-attention module, or [] where the model is not laid out that way."""
    try:
        layers = model.get_decoder().layers
    except AttributeError:
        return []
    modules = [getattr(layer, "self_attn", None) for layer in layers]
    return modules if modules and all(m is not None for m in modules) else []


def _use_prefix_attention(model: Any) -> str | None:
    """Switch an SDPA model to PREFIX_ATTENTION (same results while no prefix is set); None if done, else why not."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl == PREFIX_ATTENTION:
        return None
    if impl != "sdpa":
        return f"attention implementation {impl!r} (prefix reuse needs 'sdpa')"
    if not _attention_modules(model):
        return "no decoder layers with a self_attn module"
    _register_prefix_attention()
    model.set_attn_implementation(PREFIX_ATTENTION)
    return None


class Rater:
    """Rates encoded rows with one model: last-position score-token logits and score mass.

    ``prefix_ids``: token ids every row is expected to start with (the rating-prompt head). Its keys and values are
    computed once, in one forward pass, and put in front of the rest of every row whose token ids start with
    exactly these ids, so only the rest runs through the model; the other rows (a BPE merge across the boundary,
    or a row longer than a sliding attention window) run in full. It gives the same logits as running the row in
    full, up to floating-point rounding. It needs SDPA attention (how ``load_prepared`` loads models): the rater
    switches the model to ``PREFIX_ATTENTION``, which is SDPA with the prefix put in front; with another attention
    implementation every row runs in full (``stats.extra["prefix_unavailable"]`` says why).
    ``compile``: run each decoder layer through ``torch.compile`` (fuses the norms, rotary embedding, MLP
    activation and residual adds around the matmuls: +33-54 % tokens/s on a 2-core AMX CPU, for a 2-17 s compile).
    None (default): the ``SELECTIT_COMPILE`` environment variable if set (1/0), else on where the work is at least
    ``COMPILE_MIN_FLOPS`` of the device type, so the saving outweighs the compile, and off otherwise. If compiling fails
    (no C++ compiler, say) the rater warns and goes on without it.
    """

    def __init__(self, model: Any, tokenizer: Any, k: int, model_name: str = "model",
                 token_budget: int = 8192, max_rows: int = 256, progress: bool = True,
                 prefix_ids: Sequence[int] | None = None, compile: bool | None = None,
                 score_ids: Sequence[int] | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.model_name = model_name
        # the score tokens: "1".."k" (score_token_ids), or the ids given (the judge's digits)
        self.score_ids = [int(t) for t in score_ids] if score_ids else score_token_ids(tokenizer, k, model_name)
        self.k = len(self.score_ids)
        self.token_budget, self.max_rows, self.progress = token_budget, max_rows, progress
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self.device = next(model.parameters()).device
        self.stats = RatingStats()
        self.prefix = [int(t) for t in prefix_ids] if prefix_ids else []
        self._attention: list[Any] = []
        self._prefix_kv: list[tuple[Any, Any]] | None = None
        if self.prefix:
            why_not = _use_prefix_attention(model) or self._compute_prefix()
            if why_not:
                import warnings

                warnings.warn(f"model {model_name!r}: rating every row in full, without reusing the prompt prefix: "
                              f"{why_not}", RuntimeWarning, stacklevel=2)
                self.stats.extra["prefix_unavailable"] = why_not
                self.prefix, self._attention = [], []
        self._prefix_rows: set[int] = set()  # id() of the rows that reuse the prefix
        window = getattr(getattr(model, "config", None), "sliding_window", None)
        self._window = int(window) if isinstance(window, int) and window > 0 else None
        env = os.environ.get("SELECTIT_COMPILE")
        self.compile = compile if compile is not None else (None if env in (None, "") else env == "1")
        self.compiled = False

    def uses_prefix(self, row: EncodedRow) -> bool:
        """Whether a row can reuse the prefix: its ids start with exactly the prefix ids, at least one token
        follows, and (sliding-window models) prefix + row fit in the window, where padding between the prefix and
        the row could otherwise push real tokens out of it."""
        n = len(self.prefix)
        ids = row.input_ids
        if not n or len(ids) <= n or ids[:n] != self.prefix:
            return False
        return self._window is None or len(ids) < self._window

    def _compute_prefix(self) -> str | None:
        """One eager forward pass of the prefix alone, recording every layer's keys and values (after the rotary
        embedding, before any repeat for grouped-query attention). None if done, else why not."""
        import torch

        self._attention = _attention_modules(self.model)
        self._set_prefix(None)
        for module in self._attention:
            module._selectit_capture = []
        ids = torch.tensor([self.prefix], dtype=torch.long, device=self.device)
        try:
            with torch.inference_mode(), torch.compiler.set_stance("force_eager"):
                self.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            captured = [module._selectit_capture for module in self._attention]
        finally:
            for module in self._attention:
                module._selectit_capture = None
        if any(len(c) != 1 for c in captured):
            return f"the prefix pass did not go through {PREFIX_ATTENTION} once in every decoder layer"
        self._prefix_kv = [c[0] for c in captured]
        return None

    def _set_prefix(self, kv: list[tuple[Any, Any]] | None) -> None:
        for i, module in enumerate(self._attention):
            module._selectit_prefix = kv[i] if kv is not None else None

    def _forward(self, rows: list[EncodedRow]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        use_prefix = bool(self.prefix) and all(id(r) in self._prefix_rows for r in rows)
        skip = len(self.prefix) if use_prefix else 0
        width = max(len(r.input_ids) for r in rows) - skip
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for b, r in enumerate(rows):  # left padding: the last position is every row's last token
            n = len(r.input_ids) - skip
            ids[b, width - n:] = torch.tensor(r.input_ids[skip:])
            mask[b, width - n:] = True
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0) + skip
        if use_prefix:
            # keys [prefix | padding | row]: every query sees the whole prefix, then its own row causally; the
            # padding is masked out and positions continue after the prefix
            causal = torch.ones((width, width), dtype=torch.bool).tril()
            mask = torch.cat([torch.ones((len(rows), width, skip), dtype=torch.bool),
                              causal[None] & mask[:, None, :]], dim=2)[:, None]
        self._set_prefix(self._prefix_kv if use_prefix else None)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        try:
            with torch.inference_mode():
                # logits_to_keep=1: the LM head runs on the last position only (B x V, never B x T x V)
                out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 logits_to_keep=1, use_cache=False)
                logits = out.logits[:, -1, :].float()
                log_probs = torch.log_softmax(logits, dim=-1)
                score_ids = torch.tensor(self.score_ids, device=logits.device)
                score_logits = logits.index_select(1, score_ids)
                mass = log_probs.index_select(1, score_ids).exp().sum(dim=1)
        finally:
            self._set_prefix(None)
        self.stats.padded_tokens += width * len(rows)
        self.stats.computed_tokens += sum(len(r.input_ids) - skip for r in rows)
        return score_logits.cpu().numpy(), mass.cpu().numpy()

    def _set_compile(self, tokens: int) -> None:
        """Compile or not, for a call that runs `tokens` tokens through the model (the reused prefix left out)."""
        from selectit.models import split_across_devices, tensor_parallel_size

        want = self.compile
        if want is None:  # auto: work large enough to repay the compile, on a model neither split nor sharded
            least = COMPILE_MIN_FLOPS.get(self.device.type)
            want = (least is not None and _work_flops(self.model, tokens) >= least
                    and not split_across_devices(self.model) and tensor_parallel_size(self.model) == 1)
        self.compiled = _compile_layers(self.model) if want else _uncompile_layers(self.model)

    def _forward_agreed(self, rows: list[EncodedRow]) -> tuple[np.ndarray, np.ndarray]:
        """``_forward`` where the processes of a tensor-parallel model agree on the outcome: they run the same
        batches in the same order, so when one runs out of memory every one of them splits the batch (each raises
        an out-of-memory error), and when one fails otherwise every one stops. (The shapes and the 1/N of the
        weights are the same in every process, so they run out of memory at the same step of a batch.)"""
        from selectit.models import tensor_parallel_size

        if tensor_parallel_size(self.model) == 1:
            return self._forward(rows)
        import torch
        import torch.distributed as dist

        failure: BaseException | None = None
        try:
            result = self._forward(rows)
        except Exception as exc:  # noqa: BLE001 -- shared with the other processes below, then raised
            failure = exc
        code = 0 if failure is None else 2 if isinstance(failure, MemoryError) or is_oom(failure) else 1
        worst = torch.tensor([code], dtype=torch.int64, device=self.device)
        dist.all_reduce(worst, op=dist.ReduceOp.MAX)
        if failure is not None and (code == int(worst) or code == 1):
            raise failure
        if int(worst) == 2:
            raise MemoryError(f"model {self.model_name!r}: another tensor-parallel process ran out of memory")
        if int(worst) == 1:
            raise RuntimeError(f"model {self.model_name!r}: another tensor-parallel process failed (see its log)")
        return result

    def _rate_batch(self, rows: list[EncodedRow]) -> Iterator[tuple[EncodedRow, np.ndarray, float]]:
        try:
            logits, mass = self._forward_agreed(rows)
        except Exception as exc:  # noqa: BLE001 -- split the batch and retry on OOM; never drop a row
            oom = isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and is_oom(exc))
            if self.compiled and not oom:  # a failed compile: rate without it
                import warnings

                warnings.warn(f"model {self.model_name!r}: torch.compile failed ({str(exc).splitlines()[0][:200]}); "
                              "rating without it", RuntimeWarning, stacklevel=2)
                self.compiled = _uncompile_layers(self.model)
                yield from self._rate_batch(rows)
                return
            if not oom:
                raise
            if len(rows) == 1:
                raise MemoryError(f"model {self.model_name!r}: a single row of {len(rows[0].input_ids)} "
                                  "tokens does not fit in memory; lower max_length") from exc
            self.stats.oom_splits += 1
            empty_cache()
            half = len(rows) // 2
            yield from self._rate_batch(rows[:half])
            yield from self._rate_batch(rows[half:])
            return
        for b, row in enumerate(rows):
            yield row, logits[b], float(mass[b])

    def rate(self, rows: list[EncodedRow], row_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(len(rows), K) float32 logits and (len(rows),) score mass, in the order of `rows`."""
        from tqdm import tqdm

        out_logits = np.full((len(rows), self.k), np.nan, dtype=np.float32)
        out_mass = np.full(len(rows), np.nan, dtype=np.float32)
        with_prefix = [i for i, r in enumerate(rows) if self.uses_prefix(r)]
        self._prefix_rows = {id(rows[i]) for i in with_prefix}
        without = [i for i in range(len(rows)) if id(rows[i]) not in self._prefix_rows]
        skip = len(self.prefix)
        batches = []  # planned on the tokens each row actually runs (after the prefix where it is reused)
        for group, cut in ((with_prefix, skip), (without, 0)):
            planned = plan_low_padding([len(rows[i].input_ids) - cut for i in group], self.token_budget,
                                       self.max_rows)
            batches += [[group[j] for j in batch] for batch in planned]
        self.stats.extra["prefix_rows"] = self.stats.extra.get("prefix_rows", 0) + len(with_prefix)
        self.stats.extra["prefix_tokens"] = skip
        self._set_compile(sum(len(rows[i].input_ids) for i in without)
                          + sum(len(rows[i].input_ids) - skip for i in with_prefix))
        start = time.perf_counter()
        bar = tqdm(total=len(rows), unit="row", disable=not self.progress, mininterval=2.0,
                   desc=f"rate {self.model_name}")
        done_rows = done_tokens = 0
        for batch in batches:
            for row, logits, mass in self._rate_batch([rows[i] for i in batch]):
                if not np.isfinite(logits).all() or not np.isfinite(mass):
                    raise NonFiniteLogitsError(
                        f"model {self.model_name!r}: NaN/inf score logits for sample {row_ids[row.position]!r} "
                        f"(row {row.position}, {len(row.input_ids)} tokens): {logits.tolist()}; "
                        "try dtype fp32 or check the model weights")
                out_logits[row.position] = logits
                out_mass[row.position] = mass
                done_rows += 1
                done_tokens += len(row.input_ids)
            self.stats.batches += 1
            elapsed = time.perf_counter() - start
            bar.update(len(batch))
            bar.set_postfix(rows_s=f"{done_rows / elapsed:.1f}", tok_s=f"{done_tokens / elapsed:.0f}")
        bar.close()
        self.stats.rows += done_rows
        self.stats.tokens += done_tokens
        self.stats.seconds += time.perf_counter() - start
        return out_logits, out_mass


def _compile_layers(model: Any) -> bool:
    """torch.compile (dynamic shapes) each decoder layer whole and the final norm, which fuses the elementwise work
    around the matmuls (norms, rotary embedding, activation, residual adds, the prefix concatenation). The rater
    passes no KV cache object (the prefix goes in through ``PREFIX_ATTENTION``), so a layer traces without one.
    Layers of one type share a compiled graph, so this compiles in seconds."""
    if getattr(model, "_selectit_compiled", False):
        return True
    try:
        decoder = model.get_decoder()
        layers = decoder.layers
    except AttributeError:
        return False
    for layer in layers:
        layer.compile(dynamic=True)
    if hasattr(decoder, "norm"):
        decoder.norm.compile(dynamic=True)
    model._selectit_compiled = True
    return True


def _uncompile_layers(model: Any) -> bool:
    """Undo _compile_layers (modules go back to their eager forward); returns False (not compiled)."""
    if getattr(model, "_selectit_compiled", False):
        for module in model.modules():
            if getattr(module, "_compiled_call_impl", None) is not None:
                module._compiled_call_impl = None
        model._selectit_compiled = False
    return False


def rate_shard(shard: pd.DataFrame, prompt: RatingPrompt, model: Any, tokenizer: Any, k: int,
               max_length: int, model_name: str = "model", token_budget: int = 8192,
               progress: bool = True, *, prefix_cache: bool = True, compile: bool | None = None,
               max_rows: int = 256) -> tuple[pa.Table, dict[str, Any]]:
    """Rate every sample of a shard under one prompt; rows keep the shard's order. ``model``: a loaded HF model
    (run by the HF engine), or any ``selectit.engines.base.Engine`` (then ``tokenizer`` is its tokenizer).

    prefix_cache: compute the keys and values of the rating-prompt head (``prompt_head``) once and reuse them for
    every row whose tokens start with exactly the head's tokens (see ``Rater``). compile: see ``Rater``.
    max_rows: most rows in one batch."""
    start = time.perf_counter()
    pairs = list(zip(shard["instruction"], shard["response"]))
    # one batched call (a fast tokenizer encodes the list in parallel, with the same ids as one by one);
    # rows over max_length are re-encoded piece by piece by encode_row to cut their middle
    whole = tokenizer([build_rating_prompt(prompt.text, i, r) for i, r in pairs])["input_ids"] if pairs else []
    encoded = []
    for pos, ((instruction, response), ids) in enumerate(zip(pairs, whole)):
        truncated = False
        if len(ids) > max_length:
            ids, truncated = encode_row(tokenizer, prompt, instruction, response, max_length)
        encoded.append(EncodedRow(pos, list(ids), truncated))
    encode_seconds = time.perf_counter() - start
    prefix = tokenizer(prompt_head(prompt.text))["input_ids"] if prefix_cache else None
    engine = model if isinstance(model, Engine) else HFEngine(model, tokenizer, model_name)
    score_ids = score_token_ids(tokenizer, k, model_name)
    logits, mass, stats = engine.score(encoded, list(shard["id"]), score_ids, prefix_ids=prefix,
                                       token_budget=token_budget, max_rows=max_rows, progress=progress,
                                       compile=compile)
    table = pa.table({
        "id": pa.array(shard["id"].tolist(), pa.string()),
        "prompt_id": pa.array([prompt.id] * len(shard), pa.string()),
        "logits": pa.array(list(logits), pa.list_(pa.float32())),
        "score_mass": pa.array(mass, pa.float32()),
        "n_tokens": pa.array([len(e.input_ids) for e in encoded], pa.int32()),
        "truncated": pa.array([e.truncated for e in encoded], pa.bool_()),
    }, schema=RATING_SCHEMA)
    stats["score_token_ids"] = score_ids
    stats["truncated_rows"] = int(sum(e.truncated for e in encoded))
    stats["encode_seconds"] = round(encode_seconds, 3)
    return table, stats


def rate_shard_file(model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt, k: int,
                    max_length: int, out_path: str | Path, dtype: str | None = "auto", token_budget: int = 8192,
                    threads: int | None = None, stats_path: str | Path | None = None,
                    model_name: str | None = None, gpus: int = 1, engine: str = "hf") -> dict[str, Any]:
    """Rate one shard (a Parquet file or a table) under one prompt with one prepared model; write the
    rating shard atomically. ``engine``: ``hf`` (this process, below) or another of ``selectit.engines.ENGINES``
    (``rate_with_engine``). ``gpus`` > 1 (``selectit.models.parallel_mode``): where the architecture has a
    tensor-parallel plan, this job launches ``gpus`` torchrun processes (``rate_tensor_parallel``), one per GPU, each
    holding 1/gpus of every layer, and the first of them writes the shard; otherwise the layers are split across the
    GPUs (``load_prepared``). The log, the stats and the shard's metadata (``parallel``) say which ran."""
    cpu = prepare_cpu_threads(threads)  # before torch is first imported in a rating job's process
    if engine != "hf":
        return rate_with_engine(engine, model_dir, shard, prompt, k, max_length, out_path, dtype, token_budget,
                                stats_path, model_name, gpus, cpu)

    from selectit.launch import under_torchrun
    from selectit.models import TENSOR_PARALLEL, parallel_mode

    mode, why = parallel_mode(model_dir, gpus)
    if mode == TENSOR_PARALLEL and not under_torchrun():
        print(f"rating on {gpus} GPUs: {why}", flush=True)
        return rate_tensor_parallel(model_dir, shard, prompt, k, max_length, out_path, dtype, token_budget,
                                    cpu["threads"], stats_path, model_name, gpus, why)
    if gpus > 1:
        print(f"rating on {gpus} GPUs: {why}", flush=True)
    return _rate_loaded(model_dir, shard, prompt, k, max_length, out_path, dtype, token_budget, stats_path,
                        model_name, gpus, mode, why, cpu)


def _rate_loaded(model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt, k: int,
                 max_length: int, out_path: str | Path, dtype: str | None, token_budget: int,
                 stats_path: str | Path | None, model_name: str | None, gpus: int, mode: str, why: str,
                 cpu: dict[str, Any]) -> dict[str, Any]:
    """Load the model in this process (whole, split, or this process's part of a tensor-parallel model), rate, and
    write the shard (in tensor parallel only the first process writes it and the stats)."""
    from selectit.launch import rank
    from selectit.models import TENSOR_PARALLEL, load_prepared, parse_dtype, read_model_info

    tensor_parallel = mode == TENSOR_PARALLEL
    info = read_model_info(model_dir)
    name = model_name or info["name"]
    model, tokenizer = load_prepared(model_dir, dtype=parse_dtype(dtype), gpus=gpus, tensor_parallel=tensor_parallel)
    if not isinstance(shard, pd.DataFrame):
        shard = pq.read_table(shard).to_pandas()
    table, stats = rate_shard(shard, prompt, model, tokenizer, k, max_length, name, token_budget,
                              progress=rank() == 0)  # one progress bar in the log
    processes = gpus if tensor_parallel else 1
    meta = {"model": name, "model_fingerprint": info["fingerprint"], "prompt_id": prompt.id, "k": k,
            "max_length": max_length, "dtype": str(model.dtype), "score_token_ids": stats["score_token_ids"],
            "parallel": {"mode": mode, "gpus": gpus, "processes": processes}}
    # where it ran: on Slurm the job id and the GPUs the allocation gave it; every process of a tensor-parallel run
    where = {"rank": rank(), "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
             "local_rank": os.environ.get("LOCAL_RANK"), "devices": sorted({str(p.device) for p in model.parameters()}),
             "layer_share": _layer_share(model)}
    processes_seen = [where]
    if tensor_parallel:
        import torch.distributed as dist

        processes_seen = [None] * dist.get_world_size()
        dist.all_gather_object(processes_seen, where)
    if rank() == 0:
        write_parquet_atomic(table, out_path, meta)
    stats.update(meta)
    stats["parallel_why"] = why
    stats["processes"] = processes_seen
    stats["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    stats["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    stats["devices"] = sorted({d for w in processes_seen for d in w["devices"]})
    stats.update(cpu)
    if stats_path and rank() == 0:
        Path(stats_path).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def rate_with_engine(engine: str, model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt,
                     k: int, max_length: int, out_path: str | Path, dtype: str | None, token_budget: int,
                     stats_path: str | Path | None, model_name: str | None, gpus: int,
                     cpu: dict[str, Any]) -> dict[str, Any]:
    """Rate a shard with an engine that runs the model itself (vLLM: its own tensor parallelism over ``gpus``);
    the shard's metadata and the stats name the engine."""
    from selectit.engines import open_engine
    from selectit.models import read_model_info

    info = read_model_info(model_dir)
    name = model_name or info["name"]
    if not isinstance(shard, pd.DataFrame):
        shard = pq.read_table(shard).to_pandas()
    with open_engine(engine, model_dir, dtype=dtype, threads=cpu["threads"], gpus=gpus, model_name=name,
                     max_model_len=max_length + 1) as runner:
        table, stats = rate_shard(shard, prompt, runner, runner.tokenizer, k, max_length, name, token_budget)
        described = runner.describe()
    meta = {"model": name, "model_fingerprint": info["fingerprint"], "prompt_id": prompt.id, "k": k,
            "max_length": max_length, "dtype": described["dtype"], "score_token_ids": stats["score_token_ids"],
            "engine": engine, "parallel": {"mode": engine, "gpus": gpus, "processes": 1}}
    write_parquet_atomic(table, out_path, meta)
    stats.update(meta)
    stats["engine_info"] = described
    stats["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    stats.update(cpu)
    if stats_path:
        Path(stats_path).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def _layer_share(model: Any) -> float | None:
    """The share of the first decoder layer's parameters this process holds (1.0 unless sharded by tensor
    parallelism, where it is about 1/processes: the norms are held whole)."""
    try:
        layer = model.get_decoder().layers[0]
    except (AttributeError, IndexError, TypeError):
        return None
    params = list(layer.parameters())
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    return round(local / max(sum(p.numel() for p in params), 1), 4)


TENSOR_PARALLEL_WORKER = "selectit.rating_tp"  # the module each process of a tensor-parallel rating runs


def rate_tensor_parallel(model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt, k: int,
                         max_length: int, out_path: str | Path, dtype: str | None, token_budget: int, threads: int,
                         stats_path: str | Path | None, model_name: str | None, gpus: int, why: str,
                         worker: str = TENSOR_PARALLEL_WORKER) -> dict[str, Any]:
    """Rate a shard with ``gpus`` torchrun processes (``selectit.launch``) of ``worker``, which hold 1/gpus of each
    layer each: they get the job's shard and settings through a job file in a temporary folder beside ``out_path``,
    share the job's ``threads`` CPU threads, and inherit its GPUs (``CUDA_VISIBLE_DEVICES``: Slurm's allocation, or
    the GPUs a local run locked for the job); the first writes the shard and its stats. Returns the stats."""
    import tempfile

    from selectit.errors import SelectITError
    from selectit.launch import child_env, run_launched, torchrun_command

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.tp-", dir=out_path.parent) as tmp:
        if isinstance(shard, pd.DataFrame):
            shard_path = Path(tmp) / "shard.parquet"
            pq.write_table(pa.Table.from_pandas(shard, preserve_index=False), shard_path)
        else:
            shard_path = Path(shard)
        job = {"model_dir": str(model_dir), "shard": str(shard_path), "prompt_text": prompt.text,
               "prompt_position": prompt.position, "k": k, "max_length": max_length, "out_path": str(out_path),
               "dtype": dtype, "token_budget": token_budget, "threads": max(1, threads // gpus),
               "stats_path": str(Path(tmp) / "stats.json"), "model_name": model_name, "gpus": gpus, "why": why}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        cmd = torchrun_command(gpus, worker, [str(job_path)])
        print("launching:", " ".join(cmd), flush=True)
        status = run_launched(cmd, child_env(job["threads"]))
        if status:
            raise SelectITError(f"tensor-parallel rating ({gpus} processes) exited with status {status}; the "
                                "processes' output is in this job's log")
        stats = json.loads(Path(job["stats_path"]).read_text())
    if stats_path:
        Path(stats_path).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def tensor_parallel_worker(job_path: str | Path) -> dict[str, Any]:
    """One process of ``rate_tensor_parallel`` (under torchrun): rate the job file's shard with this process's part
    of the model."""
    job = json.loads(Path(job_path).read_text())
    cpu = prepare_cpu_threads(job["threads"])  # before torch is imported
    from selectit.models import TENSOR_PARALLEL

    try:
        return _rate_loaded(job["model_dir"], job["shard"], RatingPrompt(job["prompt_text"], job["prompt_position"]),
                            job["k"], job["max_length"], job["out_path"], job["dtype"], job["token_budget"],
                            job["stats_path"], job["model_name"], job["gpus"], TENSOR_PARALLEL, job["why"], cpu)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
