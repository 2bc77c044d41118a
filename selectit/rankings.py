"""How the selection methods rank and select records: the behaviour each `Kind` of selectit.methods declares.

A `Ranking` says what a score method ranks records by: a column of its score table (``score``, ``ifd``) or
the response's character length (``length``), the `key` that makes it higher-is-better (IFD: below 1 by
IFD, then IFD >= 1 closest to 1 first), and which record goes first between equal keys (``later``, the
higher sample position, as ``scoring.select_top`` always has; ``earlier``: the baselines). A key of NaN (an
unparsed judge answer, an undefined IFD) ranks after every other record. The selection
(selectit.selection.select_ids) takes the top of this order and the audit (selectit.audit) scores records by
the same key, so the two cannot disagree.

A selection function (`Kind.select`) is called as ``select(ranking, samples, scores, proportion, seed)``,
with the samples and the method's score table aligned row by row (the table is None for the methods that
read none), and returns the positions of the selected samples: best first for ranked methods, in sample
order otherwise. Adding a method with new behaviour: one function here and its `Kind` entry.

NumPy only (the tables are used through their columns): selectit.methods imports this module when the
rules are parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from selectit.errors import InputError

TIES = ("later", "earlier")


# ------------------------------------------------------------------------------------------ keys
def higher(values: np.ndarray) -> np.ndarray:
    """The value itself: higher is better."""
    return values


def ifd_key(ifd: np.ndarray) -> np.ndarray:
    """Q2Q (Cherry LLM): IFD < 1 by IFD, then IFD >= 1 closest to 1 first (IFD, a ratio of two losses, is >= 0,
    so every IFD < 1 keys above every IFD >= 1); NaN (undefined) stays NaN, ranked last."""
    return np.where(ifd < 1, ifd, -ifd)


def order(keys: np.ndarray, ties: str = "later") -> np.ndarray:
    """Positions best first: key descending, NaN last; between equal keys the later (or earlier) position first."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    keys = np.asarray(keys, dtype=np.float64)
    position = np.arange(len(keys))
    # lexsort sorts by the last key first: key descending (NaN last), then the position
    return np.lexsort((position if ties == "earlier" else -position, -keys))


@dataclass(frozen=True)
class Ranking:
    by: str  # "score" / "ifd": that column of the method's score table; "length": the response's characters
    key: Callable[[np.ndarray], np.ndarray] = higher  # values -> higher is better (NaN: last)
    ties: str = "later"  # between equal keys: the later sample first (select_top), or the earlier

    def __post_init__(self) -> None:
        if self.ties not in TIES:
            raise ValueError(f"Ranking ties must be one of {TIES}, got {self.ties!r}")

    @property
    def reads_samples(self) -> bool:
        """Whether it ranks by the samples themselves (the response length), not by a score table."""
        return self.by == "length"

    def values(self, samples: Any, scores: Any) -> np.ndarray:
        """The raw values ranked, one per record (of the samples for ``length``, else of the score table)."""
        if self.reads_samples:
            return samples["response"].str.len().to_numpy()
        return scores[self.by].to_numpy()

    def keys_of(self, values: np.ndarray) -> np.ndarray:
        return self.key(np.asarray(values, dtype=np.float64))

    def keys(self, samples: Any, scores: Any) -> np.ndarray:
        """Higher is better, one per record; NaN where the record ranks last."""
        return self.keys_of(self.values(samples, scores))

    def order_of(self, values: np.ndarray) -> np.ndarray:
        """Positions best first of raw values."""
        return order(self.keys_of(values), self.ties)

    def order(self, samples: Any, scores: Any) -> np.ndarray:
        """Positions best first of the records."""
        return self.order_of(self.values(samples, scores))


# ------------------------------------------------------------------------------ selection functions
def n_keep(n: int, proportion: float) -> int:
    """How many of n records a proportion selects: int(n * proportion)."""
    return int(n * proportion)


def everything(ranking: Ranking | None, samples: Any, scores: Any, proportion: float, seed: int) -> np.ndarray:
    """Every sample, in sample order."""
    return np.arange(len(samples))


def random_draw(ranking: Ranking | None, samples: Any, scores: Any, proportion: float, seed: int) -> np.ndarray:
    """int(N * proportion) samples drawn with the seed, in sample order."""
    n = len(samples)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, n_keep(n, proportion), replace=False))


def top(ranking: Ranking, samples: Any, scores: Any, proportion: float, seed: int) -> np.ndarray:
    """The top int(N * proportion) of the ranking, best first."""
    return ranking.order(samples, scores)[:n_keep(len(samples), proportion)]


def random_unselected(ranking: Ranking, samples: Any, scores: Any, proportion: float, seed: int) -> np.ndarray:
    """A random draw (with the seed, in sample order) of int(N * proportion) samples among those the top of the
    ranking at that proportion leaves out."""
    n = len(samples)
    k = n_keep(n, proportion)
    chosen = set(ranking.order(samples, scores)[:k])
    rest = np.array([i for i in range(n) if i not in chosen])
    if len(rest) < k:
        raise InputError(f"only {len(rest)} unselected samples remain; proportion {proportion} needs {k}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rest, k, replace=False))
