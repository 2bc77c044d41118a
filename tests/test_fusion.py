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
    for bad in ["magic", "random-alpha0.2", "token_r-alpha0.4", "model_r-k3"]:  # token/model-level use no alpha, K
        with pytest.raises(InputError):
            parse_method(bad)


def test_random_unselected_is_disjoint_from_selectit():
    import pandas as pd

    n = 50
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "response": ["x" * i for i in range(n)]})
    scores = pd.DataFrame({"id": samples["id"], "score": np.random.default_rng(0).normal(size=n)})
    top = set(select_ids(parse_method("selectit"), 0.2, samples, scores, 0))
    rest = set(select_ids(parse_method("random_unselected"), 0.2, samples, scores, 0))
    assert len(top) == len(rest) == 10 and not top & rest
    longest = select_ids(parse_method("length"), 0.1, samples, scores, 0)
    assert longest == ["s49", "s48", "s47", "s46", "s45"]


def test_file_chain_equals_fuse_and_computes_each_level_once(tmp_path):
    """merge -> token -> sentence -> level -> fused (the workflow's scoring DAG) gives exactly what the
    in-memory fuse() gives, for the configured levels and for an alpha / K sweep point."""
    import json

    import pandas as pd

    from selectit import fusion

    ids, prompts = [f"s{i}" for i in range(8)], ["pa", "pb", "pc"]
    samples = pd.DataFrame({"id": ids[::-1], "index": list(range(8))[::-1], "instruction": ids, "response": ids})
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), tmp_path / "samples.parquet")
    thetas = {"small": 1e6, "big": 3e6}
    tok, sent, infos, logits = {}, {}, {}, {}
    for seed, model in enumerate(thetas):
        write_ratings(tmp_path / f"{model}.ratings.parquet", ids, prompts, seed=seed)
        fusion.merge_model_files([tmp_path / f"{model}.ratings.parquet"], tmp_path / "samples.parquet", prompts,
                                 model, tmp_path / f"{model}.logits.parquet")
        logits[model] = fusion.read_logits(tmp_path / f"{model}.logits.parquet")[2]
        fusion.token_file(tmp_path / f"{model}.logits.parquet", "paper", tmp_path / f"{model}.token.parquet")
        tok[model] = tmp_path / f"{model}.token.parquet"
        for k, alpha in [(3, 0.2), (2, 0.7)]:
            fusion.sentence_file(tok[model], k, alpha, tmp_path / f"{model}.k{k}-{alpha}.parquet")
        sent[model] = tmp_path / f"{model}.k3-0.2.parquet"
        infos[model] = tmp_path / f"{model}.json"
        infos[model].write_text(json.dumps({"theta": thetas[model], "fingerprint": model}))
    levels = {}
    for level in ("token_r", "sentence_r", "model_r", "selectit"):
        source = tok if level in ("token_r", "model_r") else sent
        levels[level] = tmp_path / f"{level}.parquet"
        fusion.level_file(level, source, infos, "param", levels[level])
    fused = fusion.fused_file(tmp_path / "samples.parquet", tok, sent, levels, 3, tmp_path / "fused.parquet")
    order = sorted(range(8), key=lambda i: samples["index"][i])
    sample_ids = samples["id"][order].tolist()
    weights = {"small": 0.25, "big": 0.75}
    expected = fuse(sample_ids, logits, prompts, weights, 0.2, "paper")
    assert fused["id"].tolist() == sample_ids
    pd.testing.assert_frame_equal(fused.drop(columns="index"), expected, check_exact=True)
    fusion.level_file("selectit-alpha0.7-k2", {m: tmp_path / f"{m}.k2-0.7.parquet" for m in thetas}, infos, "param",
                      tmp_path / "sweep.parquet")
    sweep = fuse(sample_ids, logits, prompts, weights, 0.7, "paper", n_prompts=2)
    np.testing.assert_array_equal(pq.read_table(tmp_path / "sweep.parquet").column("score").to_numpy(),
                                  sweep["selectit"].to_numpy())
    meta = json.loads(pq.read_schema(tmp_path / "sweep.parquet").metadata[b"selectit"])
    assert meta["alpha"] == 0.7 and meta["k"] == 2 and meta["prompt_ids"] == ["pa", "pb"]


def test_cli_select_reads_each_level_from_the_fused_table(tmp_path):
    """`python -m selectit select` on a score table from `score`: each level under its own column."""
    import json

    import pandas as pd

    from selectit.cli import build_parser

    n = 20
    rng = np.random.default_rng(1)
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "index": range(n),
                            "instruction": ["q"] * n, "response": ["r" * (i % 7) for i in range(n)]})
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), tmp_path / "samples.parquet")
    scores = samples[["id", "index"]].assign(**{c: rng.normal(size=n) for c in ("token_r", "model_r", "selectit")})
    pq.write_table(pa.Table.from_pandas(scores, preserve_index=False), tmp_path / "scores.parquet")
    for method, column in [("token_r", "token_r"), ("selectit", "selectit"), ("model_r", "model_r")]:
        out = tmp_path / f"{method}.json"
        args = build_parser().parse_args(["select", "--samples", str(tmp_path / "samples.parquet"), "--scores",
                                          str(tmp_path / "scores.parquet"), "--method", method,
                                          "--proportion", "0.25", "--out", str(out)])
        args.func(args)
        top = scores.sort_values(column, ascending=False)["id"][:5].tolist()
        assert [r["id"] for r in json.loads(out.read_text())] == top
    args = build_parser().parse_args(["select", "--samples", str(tmp_path / "samples.parquet"), "--scores",
                                      str(tmp_path / "scores.parquet"), "--method", "selectit-alpha0.4",
                                      "--proportion", "0.25", "--out", str(tmp_path / "x.json")])
    with pytest.raises(InputError, match="fuse again"):
        args.func(args)
