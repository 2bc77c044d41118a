"""The Hugging Face ``transformers`` forward passes of the HF engine (``selectit.engines.hf``).

``Rater``: for each encoded row (``selectit.prompts.EncodedRow``) the K score-token logits (float32) and the score
mass (full-vocabulary probability on the K tokens) at the last position. Batches are built from rows sorted by token
length under a token budget (left padding, ``selectit.batching.plan_low_padding``); only the last position's hidden
state goes through the LM head, so no batch x seq x vocab tensor exists. The rating-prompt head's keys and values are
computed once (``PREFIX_ATTENTION``), decoder layers may be compiled (``_compile_layers``), and a batch that runs out of
memory is halved, never dropped.

``mean_response_losses``: the mean cross-entropy of each sequence's last tokens (IFD, ``selectit.ifd``), batched by
``selectit.batching.plan_batches`` with left padding.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from selectit.batching import RatingStats, plan_batches, plan_low_padding
from selectit.errors import NonFiniteLogitsError
from selectit.host import empty_cache, is_oom
from selectit.models import split_across_devices, tensor_parallel_size
from selectit.prompts import EncodedRow, score_token_ids

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
        if tensor_parallel_size(self.model) == 1:
            return self._forward(rows)
        # heavy: torch
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


def mean_response_losses(model: Any, sequences: Sequence[list[int]], n_scored: Sequence[int],
                         token_budget: int = 8192, pad_id: int = 0, stats: Any = None) -> np.ndarray:
    """Mean cross-entropy (float64) of the last n_scored[i] tokens of each sequence, batched."""
    stats = stats if stats is not None else RatingStats()
    out = np.full(len(sequences), np.nan)
    lengths = [len(s) for s in sequences]
    start = time.perf_counter()
    for batch in plan_batches(lengths, token_budget):
        for i, loss in _batch_losses(model, [sequences[i] for i in batch], [n_scored[i] for i in batch],
                                     pad_id, stats, batch):
            out[i] = loss
        stats.batches += 1
    stats.rows += len(sequences)
    stats.tokens += sum(lengths)
    stats.seconds += time.perf_counter() - start
    return out


def _batch_losses(model: Any, seqs: list[list[int]], n_scored: list[int], pad_id: int, stats: Any,
                  positions: list[int]):
    """(position, loss) for each sequence of one batch; on out-of-memory the batch is halved, never dropped."""
    try:
        losses = _forward_losses(model, seqs, n_scored, pad_id)
    except (RuntimeError, MemoryError) as exc:
        if not (isinstance(exc, MemoryError) or is_oom(exc)):
            raise
        if len(seqs) == 1:
            raise MemoryError(f"a single sequence of {len(seqs[0])} tokens does not fit in memory; "
                              "lower selection.ifd.max_length") from exc
        stats.oom_splits += 1
        empty_cache()
        half = len(seqs) // 2
        yield from _batch_losses(model, seqs[:half], n_scored[:half], pad_id, stats, positions[:half])
        yield from _batch_losses(model, seqs[half:], n_scored[half:], pad_id, stats, positions[half:])
        return
    stats.padded_tokens += max(len(s) for s in seqs) * len(seqs)
    stats.computed_tokens += sum(len(s) for s in seqs)
    yield from zip(positions, losses)


def _forward_losses(model: Any, seqs: list[list[int]], n_scored: list[int], pad_id: int) -> list[float]:
    import torch
    import torch.nn.functional as F

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for b, s in enumerate(seqs):  # left padding: every row's scored tokens are its last ones
        ids[b, width - len(s):] = torch.tensor(s)
        mask[b, width - len(s):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    keep = max(n_scored) + 1  # the logits predicting the scored tokens (the last position predicts nothing)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       logits_to_keep=keep, use_cache=False).logits  # B x keep x V
        targets = ids.to(device)
        losses = []
        for b, n in enumerate(n_scored):
            if n < 1:
                losses.append(float("nan"))
                continue
            # kept index j is position width - keep + j; positions width-n-1 .. width-2 predict the last n tokens
            pred = logits[b, keep - n - 1:keep - 1].float()
            losses.append(float(F.cross_entropy(pred, targets[b, width - n:], reduction="mean")))
    return losses
