"""Selection methods carry their behaviour (selectit.methods, selectit.rankings): what a `Kind` declares (its
selection function, its ranking, the score table and levels it reads) is what the selection, the audit and
the workflow use, so a new method is one registry entry (and one function where it selects in a new way)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from selectit import audit, fusion, layout, methods, rankings, scoring
from selectit.errors import InputError
from selectit.methods import BASELINES, KINDS, LEVELS, Kind, parse
from selectit.rankings import Ranking
from selectit.selection import select_ids


def tables(n=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.array([f"s{i:02d}" for i in range(n)], dtype=object)
    samples = pd.DataFrame({"id": ids, "response": ["x" * int(k) for k in rng.integers(1, 5, n)]})
    scores = pd.DataFrame({"id": ids, "score": rng.integers(0, 3, n).astype(float),
                           "ifd": rng.choice([0.3, 0.8, 1.0, 1.5, np.nan], n)})
    scores.loc[2, "score"] = np.nan
    return samples, scores


# ------------------------------------------------------------------------------------- select_ids
def test_a_new_kind_with_its_own_function_is_honoured_by_select_ids(monkeypatch):
    calls = []

    def every_other(ranking, samples, scores, proportion, seed):
        calls.append((ranking, proportion, seed, scores is None))
        return np.arange(len(samples))[::2][:rankings.n_keep(len(samples), proportion)]

    monkeypatch.setitem(KINDS, "every_other", Kind("Every other", select=every_other))
    samples, scores = tables()
    got = select_ids(parse("every_other"), 0.25, samples, scores, 7)
    assert got == ["s00", "s02", "s04"]
    assert calls == [(None, 0.25, 7, True)]  # it reads no score table: none is handed over


def test_a_new_score_kind_ranks_by_its_declared_column_key_and_ties(monkeypatch):
    samples, scores = tables()
    # the shortest responses first, ties to the earlier sample: only the declaration says so
    monkeypatch.setitem(KINDS, "shortest", Kind("Shortest", scores=True,
                                                ranking=Ranking("length", key=lambda v: -v, ties="earlier")))
    lengths = samples["response"].str.len().to_numpy()
    expected = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))[:6]
    assert select_ids(parse("shortest"), 0.5, samples, None, 0) == [samples["id"][i] for i in expected]
    # a kind reading a score table ranks by the column it names
    monkeypatch.setitem(KINDS, "by_ifd_column", Kind("IFD as is", reads="ifd", ranking=Ranking("ifd")))
    got = select_ids(parse("by_ifd_column"), 1.0, samples, scores, 0)
    assert got == list(samples["id"].to_numpy()[rankings.order(scores["ifd"].to_numpy(), "later")])


def test_select_ids_uses_the_ranking_a_kind_declares(monkeypatch):
    samples, scores = tables()
    before = select_ids(parse("judge"), 0.5, samples, scores, 0)
    monkeypatch.setitem(KINDS, "judge", Kind("judge, lowest first", reads="judge",
                                             ranking=Ranking("score", key=lambda v: -v, ties="earlier")))
    after = select_ids(parse("judge"), 0.5, samples, scores, 0)
    assert after != before
    assert after == list(samples["id"].to_numpy()[rankings.order(-scores["score"].to_numpy(), "earlier")[:6]])


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_selects_through_its_declaration(name):
    samples, scores = tables(n=20, seed=3)
    spec = KINDS[name]
    got = select_ids(parse(name), 0.3, samples, scores, 5)
    positions = spec.select(spec.ranking, samples, scores if spec.reads else None, 0.3, 5)
    assert got == list(samples["id"].to_numpy()[positions])
    if spec.select is rankings.top:  # a score method: the top of its ranking, best first
        assert got == list(samples["id"].to_numpy()[spec.ranking.order(samples, scores)[:6]])


def test_select_ids_checks_the_scores_of_the_kinds_that_read_them():
    samples, scores = tables()
    for name in ("selectit", "random_unselected", *BASELINES):
        with pytest.raises(InputError, match="not aligned"):
            select_ids(parse(name), 0.5, samples, None, 0)
        with pytest.raises(InputError, match="not aligned"):
            select_ids(parse(name), 0.5, samples, scores.iloc[::-1], 0)
    assert len(select_ids(parse("length"), 0.5, samples, None, 0)) == 6


def test_the_named_orders_are_views_of_the_declarations():
    from selectit.selection import ifd_order, judge_order

    ifd = np.array([0.9, 1.2, 0.3, 1.05, np.nan, 0.95, 0.3])
    assert ifd_order(ifd).tolist() == KINDS["ifd"].ranking.order_of(ifd).tolist() == [5, 0, 2, 6, 3, 1, 4]
    judge = np.array([4.0, np.nan, 5.0, 4.0])
    assert judge_order(judge).tolist() == [2, 0, 3, 1]
    s = np.array([1.0, 3.0, np.nan, 3.0, 0.0])
    assert scoring.select_top(s, 1.0).tolist() == KINDS["selectit"].ranking.order_of(s).tolist() == [3, 1, 0, 4, 2]


# ------------------------------------------------------------------------------------------ audit
@pytest.mark.parametrize("name", [k for k, v in KINDS.items() if v.scores and v.ranking])
def test_the_audit_scores_by_the_ranking_the_selection_uses(name):
    samples, scores = tables(n=30, seed=1)
    spec = KINDS[name]
    table = scores if not spec.ranking.reads_samples else None
    key = audit.ranking_score(name, table, samples)
    # the audit's score orders the records exactly as the selection ranks them
    assert rankings.order(key, spec.ranking.ties).tolist() == spec.ranking.order(samples, scores).tolist()
    assert np.isfinite(key).sum() + np.isneginf(key).sum() == len(key)  # what ranks last is at -inf


def test_the_audit_measures_a_new_score_kind_by_its_declared_ranking(monkeypatch, tmp_path):
    monkeypatch.setitem(KINDS, "shortest", Kind("Shortest", scores=True, ranking=Ranking("length", key=lambda v: -v)))
    config = {"models": {"a": {}}, "selection": {"methods": ["selectit"]}, "training": {"methods": []},
              "paper": {}, "datasets": {"d": {}}, "n_prompts": 3, "scoring": {"alpha": 0.4}}
    row = {r["name"]: r for r in audit.plan(config, "d")}["shortest"]
    assert row["label"] == "Shortest" and row["real"] is None and row["canary"] is None
    samples, _ = tables()
    got = audit.read_scores(row, None, samples, 1, 0)
    assert got.tolist() == (-samples["response"].str.len().to_numpy(dtype=float)).tolist()


def test_the_audit_follows_a_changed_declaration(monkeypatch):
    table = pd.DataFrame({"ifd": [0.9, 1.2, np.nan]})
    assert audit.ranking_score("ifd", table).tolist() == [0.9, -1.2, -np.inf]
    monkeypatch.setitem(KINDS, "ifd", Kind("IFD as is", reads="ifd", ranking=Ranking("ifd")))
    assert audit.ranking_score("ifd", table).tolist() == [0.9, 1.2, -np.inf]


# ------------------------------------------------------------------- score tables, levels, baselines
def old_method_scores(dataset, method):
    """rules/common.smk's method_scores before Method.score_table."""
    reads = parse(method).spec.reads
    if reads == "level":
        return layout.LEVEL.format(dataset=dataset, method=method)
    if reads == "selectit":
        return layout.LEVEL.format(dataset=dataset, method="selectit")
    if reads in ("ifd", "judge"):
        return layout.BASELINE.format(dataset=dataset, baseline=reads)
    return None


@pytest.mark.parametrize("name", [*KINDS, "selectit-alpha0.4", "sentence_r-alpha0.4-k3", "selectit-k2"])
def test_score_table_and_levels(name):
    m = parse(name)
    assert m.score_table("d") == old_method_scores("d", name)
    reads = m.spec.reads
    assert m.levels() == ({name} if reads == "level" else {"selectit"} if reads == "selectit" else set())


def test_score_tables_by_kind():
    assert BASELINES == ("ifd", "judge")
    assert parse("selectit-k2").score_table("d") == "results/scores/d/levels/selectit-k2.parquet"
    assert parse("random_unselected").score_table("d.audit") == "results/scores/d.audit/levels/selectit.parquet"
    assert parse("judge").score_table("d") == "results/scores/d/judge.parquet"
    assert parse("length").score_table("d") is None and parse("full").levels() == set()


def test_methods_imports_no_pandas_or_torch():
    code = ("import sys, selectit.methods; "
            "print(sorted(m for m in ('pandas', 'torch', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------------- score levels
def test_fuse_computes_every_level_through_level_scores(monkeypatch):
    rng = np.random.default_rng(0)
    logits = {m: rng.normal(0, 2, (8, 3, 5)) for m in ("a", "b")}
    weights = {"a": 0.3, "b": 0.7}
    expected = fusion.fuse([f"s{i}" for i in range(8)], logits, ["p1", "p2", "p3"], weights, 0.2, "paper",
                           token_level_prompt=1, level_model="a")
    seen = []
    real = fusion.level_scores

    def spy(kind, per_model, w, level_model=None):
        seen.append((kind, level_model))
        return real(kind, per_model, w, level_model)

    monkeypatch.setattr(fusion, "level_scores", spy)
    got = fusion.fuse([f"s{i}" for i in range(8)], logits, ["p1", "p2", "p3"], weights, 0.2, "paper",
                      token_level_prompt=1, level_model="a")
    assert seen == [(level, "a") for level in LEVELS]
    pd.testing.assert_frame_equal(got, expected)
    tokens = {m: got[f"token/{m}/p2"].to_numpy() for m in logits}
    sentences = {m: got[f"sentence/{m}"].to_numpy() for m in logits}
    for level in LEVELS:
        per_model = tokens if KINDS[level].source == "token" else sentences
        score, rater = real(level, per_model, weights, "a")
        np.testing.assert_array_equal(got[level].to_numpy(), score)
        assert rater == (None if KINDS[level].fused else "a")
    # by default the rater with the largest weight, as the workflow's level files
    assert real("sentence_r", sentences, weights)[1] == "b"


def test_kinds_declare_ties_and_columns_of_the_paper():
    assert {k: (v.ranking.by, v.ranking.ties) for k, v in KINDS.items() if v.ranking} == {
        "length": ("length", "later"), **{level: ("score", "later") for level in LEVELS},
        "random_unselected": ("score", "later"), "ifd": ("ifd", "earlier"), "judge": ("score", "earlier")}
    assert KINDS["full"].select is rankings.everything and KINDS["random"].select is rankings.random_draw
    assert methods.KINDS is KINDS
