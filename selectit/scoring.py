"""SelectIT's scoring equations, one function per equation (pure, vectorised NumPy).

Shapes: N samples, K score tokens ("1".."K"), P rating prompts, M rater models.
The formulas are the paper's (arXiv 2402.16705, Eq. 2-5); `variant="released"`
replays the released code, which applies a second softmax before Eq. 2-3, and at K prompts other than the
number of score classes uses K for both (`released_token_level`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from selectit import rankings

VARIANTS = ("paper", "released")


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def score_probabilities(score_logits: np.ndarray, variant: str = "paper") -> np.ndarray:
    """P' = softmax over the K score-token logits; the released variant returns P'' = softmax(P')."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown scoring variant {variant!r}; expected one of {VARIANTS}")
    logits = np.asarray(score_logits, dtype=np.float64)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"score_logits must have shape (N, K) with K >= 2, got {logits.shape}")
    if not np.isfinite(logits).all():
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        raise ValueError(f"score_logits has NaN/inf in rows {bad[:10].tolist()} ({bad.size} rows)")
    probs = _softmax(logits)
    if variant == "released":
        probs = _softmax(probs)
    return probs


def token_level(score_logits: np.ndarray, variant: str = "paper") -> np.ndarray:
    """Eq. 2-3: S_token = S_base * sum_i |P'_i - P'_base| / (K - 1), S_base = argmax P' + 1.  (N, K) -> (N,)."""
    probs = score_probabilities(score_logits, variant)
    k = probs.shape[1]
    base_index = probs.argmax(axis=1)
    base_prob = np.take_along_axis(probs, base_index[:, None], axis=1)
    spread = np.abs(probs - base_prob).sum(axis=1) / (k - 1)
    return (base_index + 1) * spread


def released_token_level(score_logits: np.ndarray, k: int) -> np.ndarray:
    """Eq. 2-3 as the released sentence_level.py / model_level.py compute them at K = k prompts: their k is
    also the number of score classes summed over. P'' (second softmax) and S_base = argmax P'' + 1 are over
    all C classes; the spread sums P''_base - P''_i over the first k classes only and divides by k - 1.
    At k = C this is `token_level(score_logits, "released")`, operation for operation.  (N, C) -> (N,)."""
    probs = score_probabilities(score_logits, "released")
    classes = probs.shape[1]
    if not 2 <= k <= classes:
        why = ("divides by k - 1 = 0" if k == 1 else
               f"sums over the first {k} of {classes} score classes, which do not exist (IndexError there)")
        raise ValueError(f"released token level at K = {k}: the released code {why}; needs 2 <= K <= {classes}")
    base_index = probs.argmax(axis=1)
    base_prob = np.take_along_axis(probs, base_index[:, None], axis=1)
    spread = np.abs(probs[:, :k] - base_prob).sum(axis=1) / (k - 1)
    return (base_index + 1) * spread


def sentence_level(token_scores: np.ndarray, alpha: float) -> np.ndarray:
    """Eq. 4: S_sent = mean_p / (1 + alpha * std_p), population std.  (N, P) -> (N,)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    scores = np.asarray(token_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"token_scores must have shape (N, P) with P >= 1, got {scores.shape}")
    return scores.mean(axis=1) / (1.0 + alpha * scores.std(axis=1, ddof=0))


def param_weights(thetas: Sequence[float]) -> np.ndarray:
    """Eq. 5 weights: theta_m / sum_j theta_j."""
    t = np.asarray(thetas, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or (t <= 0).any():
        raise ValueError(f"parameter counts must be a non-empty list of positive numbers, got {list(thetas)}")
    return t / t.sum()


def model_level(sentence_scores: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Eq. 5: S_model = sum_m w_m * S_sent,m.  (N, M) -> (N,)."""
    scores = np.asarray(sentence_scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != w.size:
        raise ValueError(f"sentence_scores {scores.shape} does not match {w.size} model weights")
    return scores @ w


def select_top(scores: np.ndarray, proportion: float) -> np.ndarray:
    """Indices of the int(N * proportion) highest scores, best first; ties go to the higher original index (NaN
    last): the score levels' ranking (selectit.rankings.order)."""
    if not 0 < proportion <= 1:
        raise ValueError(f"proportion must be in (0, 1], got {proportion}")
    s = np.asarray(scores, dtype=np.float64)
    return rankings.order(s, "later")[:rankings.n_keep(len(s), proportion)]
