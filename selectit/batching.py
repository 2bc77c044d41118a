"""Row batching of the model jobs: rows grouped into batches under a token budget (``plan_batches``: sorted by length,
bounded stretch; ``plan_low_padding``: the least padded tokens plus a per-batch cost), fixed-size batches and their
padding share, and the stats a batched run keeps (``RatingStats``). Used by the HF rater and IFD losses
(``selectit.engines.hf_rater``), embeddings, and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


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
