"""Merging refuses incomplete or duplicated ratings and names the keys; fusion equals the equations."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectit import scoring
from selectit.errors import IncompleteRatingsError
from selectit.fusion import fuse, merge_model_ratings
from selectit.selection import parse_method, select_ids
from selectit.errors import InputError


def write_ratings(path, ids, prompt_ids, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(i, p) for i in ids for p in prompt_ids]
    pq.write_table(pa.table({
        "id": [r[0] for r in rows], "prompt_id": [r[1] for r in rows],
        "logits": [rng.normal(size=5).astype(np.float32).tolist() for _ in rows],
        "score_mass": [0.5] * len(rows), "n_tokens": [10] * len(rows), "truncated": [False] * len(rows),
    }), path)


def test_missing_and_duplicated_keys_are_named(tmp_path):
    ids, prompts = ["s1", "s2", "s3"], ["pa", "pb"]
    write_ratings(tmp_path / "a.parquet", ["s1", "s2"], prompts)
    with pytest.raises(IncompleteRatingsError, match=r"2 missing \(sample, prompt, model=m7\) keys: \(sample s3, prompt pa\)"):
        merge_model_ratings([tmp_path / "a.parquet"], ids, prompts, "m7")
    write_ratings(tmp_path / "b.parquet", ["s2", "s3"], prompts)
    with pytest.raises(IncompleteRatingsError, match=r"rated more than once: \(sample s2, prompt pa\)"):
        merge_model_ratings([tmp_path / "a.parquet", tmp_path / "b.parquet"], ids, prompts, "m7")
    write_ratings(tmp_path / "c.parquet", ["s3"], prompts)
    logits, _ = merge_model_ratings([tmp_path / "c.parquet", tmp_path / "a.parquet"], ids, prompts, "m7")
    assert logits.shape == (3, 2, 5)
    direct = pq.read_table(tmp_path / "c.parquet").to_pandas()
    np.testing.assert_array_equal(logits[2, 1], direct["logits"][1])  # aligned to (sample s3, prompt pb)


def test_fuse_equals_equations_by_hand():
    rng = np.random.default_rng(3)
    logits = {"small": rng.normal(size=(6, 3, 5)), "big": rng.normal(size=(6, 3, 5))}
    weights = dict(zip(["small", "big"], scoring.param_weights([1, 3])))
    out = fuse([f"s{i}" for i in range(6)], logits, ["p1", "p2", "p3"], weights, 0.2, "paper")
    tok = {m: scoring.token_level(l.reshape(18, 5)).reshape(6, 3) for m, l in logits.items()}
    sent = {m: scoring.sentence_level(t, 0.2) for m, t in tok.items()}
    np.testing.assert_allclose(out["selectit"], 0.25 * sent["small"] + 0.75 * sent["big"])
    np.testing.assert_allclose(out["sentence_r"], sent["big"])
    np.testing.assert_allclose(out["token_r"], tok["big"][:, 0])
    np.testing.assert_allclose(out["model_r"], 0.25 * tok["small"][:, 0] + 0.75 * tok["big"][:, 0])
    k2 = fuse([f"s{i}" for i in range(6)], logits, ["p1", "p2", "p3"], weights, 0.2, "paper", n_prompts=2)
    np.testing.assert_allclose(k2["sentence/big"], scoring.sentence_level(tok["big"][:, :2], 0.2))


def test_method_names():
    assert parse_method("selectit-alpha0.4-k3").alpha == 0.4
    assert parse_method("selectit-k3").k == 3
    for bad in ["magic", "random-alpha0.2"]:
        with pytest.raises(InputError):
            parse_method(bad)


def test_random_unselected_is_disjoint_from_selectit():
    import pandas as pd

    n = 50
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "response": ["x" * i for i in range(n)]})
    scores = pd.DataFrame({"id": samples["id"], "selectit": np.random.default_rng(0).normal(size=n)})
    top = set(select_ids(parse_method("selectit"), 0.2, samples, scores, 0))
    rest = set(select_ids(parse_method("random_unselected"), 0.2, samples, scores, 0))
    assert len(top) == len(rest) == 10 and not top & rest
    longest = select_ids(parse_method("length"), 0.1, samples, scores, 0)
    assert longest == ["s49", "s48", "s47", "s46", "s45"]
