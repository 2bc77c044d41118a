"""Metrics for the generation benchmarks (pure Python, no model code).

- SQuAD v1.1 answer normalisation, token F1 and exact match, each the max over the gold answers
  (the definitions of the official SQuAD v1.1 script, which open-instruct's TyDiQA eval uses through
  ``evaluate.load("squad")``). Scores are returned in percent, as that script does.
- The unbiased pass@k estimator of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``, computed as a
  product so that it never forms huge binomials.
- AlpacaEval win rate from preferences coded as AlpacaEval does (1 = reference wins, 2 = model wins,
  1.5 = tie; 0 is an old code for a tie): ties count half.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop ASCII punctuation, drop English articles, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 (0..1) between one prediction and one gold answer, after normalisation."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = Counter(pred_tokens) & Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def max_over_golds(fn, prediction: str, golds: Iterable[str]) -> float:
    golds = list(golds)
    if not golds:
        raise ValueError("an example needs at least one gold answer")
    return max(fn(prediction, g) for g in golds)


def squad_scores(predictions: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean EM and F1 in percent over examples (each the max over that example's gold answers)."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} gold lists")
    if not predictions:
        raise ValueError("no predictions to score")
    em = [max_over_golds(exact_match, p, g) for p, g in zip(predictions, golds)]
    f1 = [max_over_golds(token_f1, p, g) for p, g in zip(predictions, golds)]
    return {"exact_match": 100.0 * sum(em) / len(em), "f1": 100.0 * sum(f1) / len(f1), "n": len(em)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with n samples of which c are correct (Chen et al. 2021).

    ``1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)``; exactly 1.0 when n - c < k.
    """
    if not (0 <= c <= n) or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got n={n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float:
    """Mean pass@k in percent over problems given (n, c) per problem."""
    if not counts:
        raise ValueError("no problems to score")
    return 100.0 * math.fsum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def win_rate(preferences: Sequence[float]) -> dict[str, float]:
    """Win rate (percent) of the model against the reference from AlpacaEval preferences.

    1 = reference better, 2 = model better, 1.5 (or the legacy 0) = tie; values in between are soft
    preferences. win_rate = mean(preference - 1) * 100, so a tie counts half a win.
    """
    prefs = []
    for p in preferences:
        p = float(p)
        if p == 0.0:
            p = 1.5
        if math.isnan(p) or not 1.0 <= p <= 2.0:
            raise ValueError(f"preference must be in [1, 2] (or 0 for a tie), got {p}")
        prefs.append(p)
    if not prefs:
        raise ValueError("no preferences to score")
    n = len(prefs)
    return {
        "win_rate": 100.0 * math.fsum(p - 1.0 for p in prefs) / n,
        "n_wins": sum(p > 1.5 for p in prefs),
        "n_losses": sum(p < 1.5 for p in prefs),
        "n_draws": sum(p == 1.5 for p in prefs),
        "n_total": n,
    }
