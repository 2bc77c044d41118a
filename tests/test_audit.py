"""The selection audit's parts (selectit.audit): canaries and the metric code, on real records and hand-made
scores. The workflow side (own shards, never selected, toggling re-rates nothing) is tests/test_audit_workflow.py."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectit import audit
from selectit.canaries import CORRUPTIONS, REFUSALS, make_canaries, sentences
from selectit.data import load_dataset_table
from selectit.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DEFAULT = {"path": str(REPO / "data/default/instructions.json"), "format": "alpaca"}
ALPACA = REPO.parent / "shared/data/alpaca/alpaca_en_demo.json"
KINDS = list(CORRUPTIONS)


@pytest.fixture(scope="module")
def default_table():
    return load_dataset_table(DEFAULT)[0]


# ------------------------------------------------------------------------------------------ canaries
def test_canaries_link_to_distinct_originals_and_deal_kinds_in_turn(default_table):
    canaries, report = make_canaries(default_table, 60, 0, KINDS)
    assert len(canaries) == 60 and report["audit"]["shortfall"] == 0
    assert canaries["canary_of"].is_unique and set(canaries["canary_of"]) <= set(default_table["id"])
    assert canaries["kind"].value_counts().to_dict() == {k: 10 for k in KINDS}
    assert canaries["id"].is_unique and not set(canaries["id"]) & set(default_table["id"])
    assert all(i.startswith("c") for i in canaries["id"]) and all(i.startswith("s") for i in default_table["id"])
    originals = default_table.set_index("id").loc[canaries["canary_of"]]
    assert (originals["instruction"].to_numpy() == canaries["instruction"].to_numpy()).all()
    assert (originals["response"].to_numpy() != canaries["response"].to_numpy()).all()
    # the same settings, the same canaries; another seed, other originals
    again, _ = make_canaries(default_table, 60, 0, KINDS)
    pd.testing.assert_frame_equal(canaries, again)
    other, _ = make_canaries(default_table, 60, 1, KINDS)
    assert set(other["canary_of"]) != set(canaries["canary_of"])


def test_each_corruption_does_what_its_kind_says(default_table):
    canaries, _ = make_canaries(default_table, 60, 0, KINDS)
    by_id = default_table.set_index("id")
    responses = set(default_table["response"])
    for row in canaries.itertuples():
        original = by_id.loc[row.canary_of, "response"]
        if row.kind == "off_topic":
            assert row.response in responses and row.response != original
        elif row.kind == "truncated":
            assert original.startswith(row.response) and len(row.response.split()) <= 0.6 * len(original.split())
        elif row.kind == "refusal":
            assert row.response in REFUSALS
        elif row.kind == "wrong_answer":
            before, after = re.findall(r"\d+", original), re.findall(r"\d+", row.response)
            assert len(before) == len(after) and all(a != b for a, b in zip(before, after))
            assert re.sub(r"\d+", "#", original) == re.sub(r"\d+", "#", row.response)
        elif row.kind == "copied_instruction":
            assert row.response == row.instruction
        elif row.kind == "shuffled":
            assert sorted(row.response.split()) == sorted(original.split())  # the same words, reordered
            assert sentences(row.response) != sentences(original)


def test_a_kind_that_runs_out_of_records_makes_fewer_and_says_so():
    table = pd.DataFrame({"id": [f"s{i}" for i in range(6)], "instruction": [f"Add {i} and 1." for i in range(6)],
                          "response": [f"It is {i + 1}." for i in range(6)]})  # one sentence, four words each
    canaries, report = make_canaries(table, 6, 0, ["shuffled", "refusal", "truncated"])
    counts = report["audit"]["kinds"]
    assert counts["shuffled"] == {"made": 0, "passed_over": 6} and counts["truncated"]["made"] == 0
    assert counts["refusal"]["made"] == 6 and report["audit"]["shortfall"] == 0
    assert set(canaries["kind"]) == {"refusal"}


def test_more_canaries_than_records_stops_with_the_key(default_table):
    with pytest.raises(InputError, match="audit.n"):
        make_canaries(default_table, len(default_table) + 1, 0, KINDS)
    with pytest.raises(InputError, match="audit.kinds"):
        make_canaries(default_table, 5, 0, ["nonsense"])


def test_a_canary_set_is_a_dataset_read_from_its_source(default_table):
    config = {"datasets": {"default": {**DEFAULT, "n_shards": 3}}, "audit": {"enabled": True, "n": 12, "seed": 3}}
    specs = audit.audit_datasets(config)
    assert list(specs) == ["default.audit"]
    spec = specs["default.audit"]
    assert spec["n_shards"] == 1 and audit.source_path(spec) == DEFAULT["path"]
    table, report = load_dataset_table(spec)
    assert len(table) == 12 and report["audit"]["n_requested"] == 12
    assert audit.audit_datasets({**config, "audit": {"enabled": False}}) == {}
    with pytest.raises(InputError, match="audit.datasets"):
        audit.audit_datasets({**config, "audit": {"enabled": True, "datasets": ["other"]}})
    with pytest.raises(InputError, match="datasets.x.audit"):
        audit.audit_datasets({"datasets": {"x.audit": DEFAULT}, "audit": {}})


def test_selection_refuses_a_canary_set(tmp_path, default_table):
    from selectit.data import prepare_samples
    from selectit.selection import make_subset_from_files

    spec = {"canaries_of": "default", "source": DEFAULT, "n": 12, "seed": 0, "kinds": KINDS, "n_shards": 1}
    prepare_samples(spec, tmp_path / "samples.parquet", tmp_path / "report.json")
    with pytest.raises(InputError, match="canary set"):
        make_subset_from_files("random", 0.5, tmp_path / "samples.parquet", tmp_path / "report.json", {"seed": 0},
                               tmp_path / "a.json", tmp_path / "b.json", tmp_path / "m.json")
    assert not (tmp_path / "a.json").exists()


@pytest.mark.skipif(not ALPACA.is_file(), reason="../shared/data is not beside the checkout")
def test_two_hundred_canaries_of_real_alpaca_records():
    table = load_dataset_table({"path": str(ALPACA), "format": "alpaca"})[0]
    canaries, report = make_canaries(table, 200, 0, KINDS)
    assert len(canaries) == 200 and canaries["canary_of"].is_unique
    made = {k: v["made"] for k, v in report["audit"]["kinds"].items()}
    assert sum(made.values()) == 200 and min(made.values()) == 33


# ---------------------------------------------------------------------------------------- metrics
def brute_auroc(good, bad):
    pairs = list(itertools.product(good, bad))
    return sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in pairs) / len(pairs)


@pytest.mark.parametrize("seed", range(5))
def test_auroc_is_the_pairwise_count_ties_included(seed):
    rng = np.random.default_rng(seed)
    good = rng.integers(0, 5, size=int(rng.integers(1, 30))).astype(float)  # few values: many ties
    bad = rng.integers(0, 5, size=int(rng.integers(1, 30))).astype(float)
    assert audit.auroc(good, bad) == pytest.approx(brute_auroc(good, bad), abs=1e-12)


def test_auroc_edges():
    assert audit.auroc([2, 3], [0, 1]) == 1.0
    assert audit.auroc([0, 1], [2, 3]) == 0.0
    assert audit.auroc([1, 1, 1], [1, 1]) == 0.5
    assert math.isnan(audit.auroc([], [1.0]))


def test_cut_and_left_out_follow_the_top_share():
    real = [5, 4, 4, 3, 2, 1, 1, 0, 0, 0]
    assert audit.cutoff(real, 0.2) == 4  # the top 2 are 5 and 4
    assert audit.cutoff(real, 0.05) == math.inf  # int(10 * 0.05) = 0 kept: everything left out
    assert audit.left_out([4, 3.9, 5, 0], 4) == 0.5  # a score equal to the cut is kept
    assert audit.left_out([4, 5], math.inf) == 1.0


def test_degenerate_flags_a_constant_scorer_and_low_score_mass():
    assert audit.mode_share([3.0] * 8 + [2.0, 1.0]) == 0.8
    assert "80% of records share one score" in audit.degenerate(np.array([3.0] * 8 + [2.0, 1.0]), [], {}, 0.5, 0.05)
    assert audit.degenerate(np.arange(10.0), ["a"], {"a": 0.3}, 0.5, 0.05) == ""
    assert "a 0.010" in audit.degenerate(np.arange(10.0), ["a", "b"], {"a": 0.01, "b": 0.3}, 0.5, 0.05)


def test_ranking_scores_order_like_the_selection():
    from selectit.selection import ifd_order, judge_order

    ifd = np.array([0.9, 1.2, 0.3, 1.05, np.nan, 0.95])
    score = audit.ranking_score("ifd", pd.DataFrame({"ifd": ifd}))
    assert list(np.argsort(-score, kind="stable")) == list(ifd_order(np.nan_to_num(ifd, nan=np.inf)))
    judge = np.array([4.0, np.nan, 5.0, 1.0])
    score = audit.ranking_score("judge", pd.DataFrame({"score": judge}))
    assert list(np.argsort(-score, kind="stable")) == list(judge_order(judge))


def _score_file(path, ids, values, column="score", meta=None):
    import pyarrow as pa

    from selectit.atomic import write_parquet_atomic

    write_parquet_atomic(pa.table({"id": list(ids), column: list(values)}), path, meta)
    return str(path)


def test_audit_metrics_on_hand_made_scores(tmp_path):
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(10)], "response": ["x" * (i + 1) for i in range(10)],
                            "flaw": [None] * 7 + ["refusal", "refusal", "off_topic"]})
    canaries = pd.DataFrame({"id": ["c1", "c2", "c3", "c4"], "canary_of": ["s9", "s8", "s7", "s6"],
                             "kind": ["refusal", "refusal", "truncated", "truncated"],
                             "response": ["y", "yyyyyyyyyyyy", "y", "y"]})
    real = _score_file(tmp_path / "real.parquet", samples["id"], np.arange(10.0), meta={"level_model": "r1"})
    fake = _score_file(tmp_path / "fake.parquet", canaries["id"], [9.5, 0.0, 7.0, 4.0])
    plan = [{"name": "selectit", "label": "SelectIT", "source": "level", "model": None, "real": real, "canary": fake},
            {"name": "length", "label": "Top by length", "source": "length", "model": None, "real": None,
             "canary": None}]
    m = audit.audit_metrics(samples, canaries, plan, [0.2, 0.5], seed=0, token_prompt=1, models=["r1", "r2"],
                            mass={"r1": 0.01, "r2": 0.9}, max_mode_share=0.5, min_score_mass=0.05)
    row = m[(m.reference == "canaries") & (m.scorer == "selectit") & (m.kind == "all")].iloc[0]
    originals, fakes = [9, 8, 7, 6], [9.5, 0.0, 7.0, 4.0]
    assert row.auroc == pytest.approx(brute_auroc(originals, fakes))
    assert row.win_rate == 0.5 and row.tie_rate == 0.25  # 8 > 0 and 6 > 4; 9 < 9.5; 7 = 7
    assert row["left_out_0.2"] == 0.75  # cut at 0.2: 8 (the top 2 are 9, 8): 0, 7 and 4 fall below
    assert row["left_out_0.5"] == 0.5  # cut at 0.5: 5
    assert row["good_left_out_0.2"] == 0.5  # originals 7 and 6 fall below 8
    assert "r1 0.010" in row.degenerate  # the level names its rater r1, whose score mass is low
    refusal = m[(m.reference == "canaries") & (m.scorer == "selectit") & (m.kind == "refusal")].iloc[0]
    assert refusal.auroc == pytest.approx(brute_auroc([9, 8], [9.5, 0.0])) and refusal.n_bad == 2
    length = m[(m.reference == "canaries") & (m.scorer == "length") & (m.kind == "all")].iloc[0]
    assert length.auroc == pytest.approx(brute_auroc([10, 9, 8, 7], [1, 12, 1, 1])) and length.degenerate == ""
    flaw = m[(m.reference == "flaw labels") & (m.scorer == "selectit") & (m.kind == "all")].iloc[0]
    assert flaw.auroc == pytest.approx(brute_auroc(range(7), [7, 8, 9])) and math.isnan(flaw.win_rate)
    assert set(m[m.reference == "flaw labels"].kind) == {"all", "off_topic", "refusal"}
    table = audit.summary(m.assign(dataset="d"), [0.2, 0.5])
    assert list(table["Scorer"]) == ["SelectIT", "Top by length"] * 2
    assert "AUROC refusal" in table.columns and "Left out at 0.5" in table.columns


def test_audit_metrics_refuse_stale_canaries(tmp_path):
    samples = pd.DataFrame({"id": ["s1", "s2"], "response": ["a", "b"]})
    canaries = pd.DataFrame({"id": ["c1"], "canary_of": ["s9"], "kind": ["refusal"], "response": ["n"]})
    with pytest.raises(InputError, match="stale"):
        audit.audit_metrics(samples, canaries, [], [0.5], seed=0, token_prompt=1, models=[], mass={},
                            max_mode_share=0.5, min_score_mass=0.05)


def test_every_scoring_method_of_the_registry_is_audited():
    from selectit.methods import KINDS

    config = {"models": {"a": {}, "b": {}}, "selection": {"methods": ["selectit", "ifd"]},
              "training": {"methods": []}, "paper": {}, "datasets": {"d": {}}, "n_prompts": 3,
              "scoring": {"alpha": 0.4}}
    names = [s.name for s in audit.scorers(config)]
    assert [k for k, v in KINDS.items() if v.scores and k != "judge"] == names[:len(names) - 4]
    assert names[-4:] == ["token@a", "token@b", "sentence@a", "sentence@b"]
    plan = {row["name"]: row for row in audit.plan(config, "d")}
    assert plan["sentence@b"]["canary"] == "results/scores/d.audit/b/sentence/k3-alpha0.4.parquet"
    assert plan["ifd"]["real"] == "results/scores/d/ifd.parquet" and plan["length"]["real"] is None
