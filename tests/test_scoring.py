"""Every SelectIT equation: hand values, the paper's worked example, and plain-loop re-implementations."""

import math

import numpy as np
import pytest

from selectit import scoring


def plain_token_level(logits, variant):
    out = []
    for row in logits:
        e = [math.exp(x - max(row)) for x in row]
        p = [x / sum(e) for x in e]
        if variant == "released":
            e2 = [math.exp(x) for x in p]
            p = [x / sum(e2) for x in e2]
        base = max(range(len(p)), key=lambda i: (p[i], -i))  # first maximum, like argmax
        spread = sum(abs(x - p[base]) for x in p) / (len(p) - 1)
        out.append((base + 1) * spread)
    return np.array(out)


def test_worked_example_token_level():
    probs = np.array([[0.05, 0.10, 0.50, 0.25, 0.10]])
    assert scoring.token_level(np.log(probs))[0] == pytest.approx(1.125)


def test_worked_example_model_level():
    sentence = np.array([[1.59, 2.13, 1.89]])
    weights = scoring.param_weights([7, 13, 70])
    assert scoring.model_level(sentence, weights)[0] == pytest.approx(1.901, abs=5e-4)


def test_released_variant_applies_second_softmax():
    probs = np.array([0.05, 0.10, 0.50, 0.25, 0.10])
    p2 = np.exp(probs) / np.exp(probs).sum()
    expected = 3 * np.abs(p2 - p2[2]).sum() / 4
    assert scoring.token_level(np.log(probs)[None], "released")[0] == pytest.approx(expected)
    assert expected < 1.125


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_token_level_matches_plain_loop(variant):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(200, 5))
    np.testing.assert_allclose(scoring.token_level(logits, variant), plain_token_level(logits, variant), rtol=1e-12)


def test_sentence_level_hand_value_and_loop():
    scores = np.array([[1.0, 2.0, 3.0]])
    std = math.sqrt(2 / 3)
    assert scoring.sentence_level(scores, 0.2)[0] == pytest.approx(2.0 / (1 + 0.2 * std))
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 5, size=(50, 5))
    loop = [np.mean(r) / (1 + 0.4 * math.sqrt(sum((x - np.mean(r)) ** 2 for x in r) / len(r))) for r in s]
    np.testing.assert_allclose(scoring.sentence_level(s, 0.4), loop, rtol=1e-12)


def test_alpha_zero_is_mean_and_negative_alpha_rejected():
    s = np.array([[1.0, 4.0]])
    assert scoring.sentence_level(s, 0.0)[0] == 2.5
    with pytest.raises(ValueError, match="alpha"):
        scoring.sentence_level(s, -0.1)


def test_released_explicit_weights_expressible():
    s = np.array([[1.0, 1.0, 1.0]])
    assert scoring.model_level(s, [7 / 20, 13 / 20, 70 / 90])[0] == pytest.approx(7 / 20 + 13 / 20 + 70 / 90)


def test_select_top_ties_go_to_higher_index_and_count():
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert scoring.select_top(scores, 0.4).tolist() == [4, 2]
    assert len(scoring.select_top(np.zeros(52002), 0.2)) == 10400


@pytest.mark.parametrize("bad", [0, -0.1, 1.5])
def test_select_top_rejects_bad_proportion(bad):
    with pytest.raises(ValueError, match="proportion"):
        scoring.select_top(np.ones(3), bad)


def test_nonfinite_logits_name_rows():
    logits = np.zeros((4, 5))
    logits[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        scoring.token_level(logits)


def plain_released_k_token_level(logits, k):
    """The released sentence_level.py's token score at -k K, written as a plain loop: P'' over every class,
    the base over every class, the spread over the first k classes only, divided by k - 1."""
    out = []
    for row in logits:
        e = [math.exp(x - max(row)) for x in row]
        p = [x / sum(e) for x in e]
        e2 = [math.exp(x) for x in p]
        p = [x / sum(e2) for x in e2]
        base = max(range(len(p)), key=lambda i: (p[i], -i))
        total = 0.0
        for i in range(k):
            total += p[base] - p[i]
        out.append((base + 1) * (total / (k - 1)))
    return np.array(out)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_released_k_token_level_matches_plain_loop(k):
    rng = np.random.default_rng(k)
    logits = rng.normal(0, 3, size=(300, 5))
    np.testing.assert_allclose(scoring.released_token_level(logits, k), plain_released_k_token_level(logits, k),
                               rtol=1e-12, atol=1e-15)


def test_released_k_at_all_classes_is_the_released_token_level_and_differs_below():
    logits = np.random.default_rng(7).normal(0, 3, size=(200, 5))
    np.testing.assert_array_equal(scoring.released_token_level(logits, 5), scoring.token_level(logits, "released"))
    assert not np.allclose(scoring.released_token_level(logits, 3), scoring.token_level(logits, "released"))


@pytest.mark.parametrize("k, why", [(1, "divides by k - 1 = 0"), (6, "IndexError")])
def test_released_k_outside_the_classes_is_refused(k, why):
    with pytest.raises(ValueError, match=why):
        scoring.released_token_level(np.zeros((2, 5)), k)
