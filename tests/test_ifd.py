"""IFD (Q2Q) baseline: token masks, batched losses against the HF model's own loss, truncation, merging and
the `ifd` selection."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from selectit.errors import IncompleteRatingsError, InputError
from selectit.ifd import IFD_PROMPT, encode_pair, ifd_shard, merge_ifd_files, start_token
from selectit.atomic import write_parquet_atomic
from selectit.selection import ifd_order, make_subset_from_files, parse_method, select_ids

RECORDS = [
    ("Add 2 and 3.", "5"),
    ("Write a haiku about rain.", "Rain taps on the roof\nsoft drums in the dark night\nmorning finds puddles"),
    ("Name a colour.", "Blue."),
    ("Explain recursion in one paragraph.", "Recursion is when a function calls itself on a smaller part of the "
     "problem until it reaches a case simple enough to answer directly. " * 3),
    ("Translate 'chat' from French.", "cat"),
    ("List three prime numbers.", "2, 3 and 5."),
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tokenizer = load_prepared(tiny_model_dir, dtype=torch.float32, device="cpu")
    return model, tokenizer


def _shard(records=RECORDS):
    return pd.DataFrame({"id": [f"s{i}" for i in range(len(records))],
                         "instruction": [r[0] for r in records], "response": [r[1] for r in records]})


def test_masks_cover_exactly_the_response(tiny):
    _, tok = tiny
    start = start_token(tok)
    assert start == tok.bos_token_id is not None
    for instruction, response in RECORDS:
        pair = encode_pair(tok, instruction, response, 1024, start)
        resp = tok(response, add_special_tokens=False)["input_ids"]
        n = pair.n_scored
        assert n == len(resp) and not pair.truncated
        # both sequences end with the same scored tokens, which are exactly the response's
        assert pair.conditioned[-n:] == pair.response_only[-n:] == resp
        assert pair.response_only == [start] + resp
        assert pair.conditioned[0] == start
        assert tok.decode(pair.conditioned[1:-n]) == IFD_PROMPT.format(instruction=instruction)
    # no start token: the first response token has no context alone, so it is scored in neither sequence
    pair = encode_pair(tok, "Name a colour.", "Deep blue.", 1024, None)
    resp = tok("Deep blue.", add_special_tokens=False)["input_ids"]
    assert pair.response_only == resp and pair.n_scored == len(resp) - 1
    assert pair.conditioned[-pair.n_scored:] == resp[1:]


def _direct_loss(model, ids, n_scored):
    """The HF model's own loss (batch size 1, fp32) with labels only on the last n_scored tokens."""
    import torch

    x = torch.tensor([ids])
    labels = torch.full_like(x, -100)
    labels[0, len(ids) - n_scored:] = x[0, len(ids) - n_scored:]
    with torch.inference_mode():
        return float(model(input_ids=x, labels=labels).loss)


def test_batched_ifd_equals_direct_per_sample_loss(tiny):
    model, tok = tiny
    shard = _shard()
    # a small budget makes several batches of different widths (left padding inside each)
    table, stats = ifd_shard(shard, model, tok, max_length=1024, token_budget=160)
    assert stats["batches"] > 2 and stats["padded_tokens"] > stats["computed_tokens"]
    out = table.to_pandas()
    assert out["id"].tolist() == shard["id"].tolist()
    start = start_token(tok)
    for k, (instruction, response) in enumerate(RECORDS):
        pair = encode_pair(tok, instruction, response, 1024, start)
        cond = _direct_loss(model, pair.conditioned, pair.n_scored)
        alone = _direct_loss(model, pair.response_only, pair.n_scored)
        assert out.loc[k, "loss_conditioned"] == pytest.approx(cond, rel=1e-4)
        assert out.loc[k, "loss_response"] == pytest.approx(alone, rel=1e-4)
        assert out.loc[k, "ifd"] == pytest.approx(cond / alone, rel=2e-4)
        assert out.loc[k, "n_response_tokens"] == pair.n_scored
    assert not out["truncated"].any()


def test_truncation_cuts_the_response_tail_and_flags_the_row(tiny):
    model, tok = tiny
    start = start_token(tok)
    instruction, response = RECORDS[3]
    resp = tok(response, add_special_tokens=False)["input_ids"]
    pair = encode_pair(tok, instruction, response, 40, start)
    assert pair.truncated and len(pair.conditioned) == 40
    assert pair.response_only[1:] == resp[:pair.n_scored]  # a head of the response: its tail was cut
    # an instruction too long for the room: its middle goes, the response keeps half of the room
    long_instruction = "Please answer carefully. " * 40
    pair = encode_pair(tok, long_instruction, response, 60, start)
    assert pair.truncated and len(pair.conditioned) == 60 and pair.n_scored >= (60 - 9) // 2
    table, stats = ifd_shard(_shard([RECORDS[0], (instruction, response)]), model, tok, max_length=40)
    assert table.column("truncated").to_pylist() == [False, True] and stats["truncated_rows"] == 1
    with pytest.raises(InputError, match="too small for the IFD prompt"):
        encode_pair(tok, instruction, response, 5, start)


def test_nan_loss_names_the_sample(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32, device="cpu")
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    with pytest.raises(InputError, match="NaN/inf loss for sample 's0'"):
        ifd_shard(_shard(), model, tok, max_length=1024)


def test_ifd_order_ranks_ifd_at_least_one_last():
    ifd = np.array([0.9, 1.2, 0.5, 1.0, 0.9, 0.95, 3.0])
    # IFD < 1 by IFD descending (ties: earlier sample first), then IFD >= 1 by IFD ascending
    assert ifd_order(ifd).tolist() == [5, 0, 4, 2, 3, 1, 6]
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(7)], "response": ["x"] * 7})
    scores = pd.DataFrame({"id": samples["id"], "ifd": ifd})
    assert select_ids(parse_method("ifd"), 0.5, samples, scores, 0) == ["s5", "s0", "s4"]
    assert select_ids(parse_method("ifd"), 1.0, samples, scores, 0)[-3:] == ["s3", "s1", "s6"]
    with pytest.raises(InputError, match="-alpha/-k apply only"):
        parse_method("ifd-k3")


def _samples_file(tmp_path, n):
    samples = pd.DataFrame({"id": [f"s{i}" for i in range(n)], "index": range(n),
                            "instruction": [f"q{i}" for i in range(n)], "response": [f"a{i}" for i in range(n)],
                            "source": ["t"] * n})
    path = tmp_path / "samples.parquet"
    pq.write_table(pa.Table.from_pandas(samples, preserve_index=False), path)
    return samples, path


def _baseline_subset(tmp_path, samples_path, model_json, method, proportion, **score_paths):
    """make_subset_from_files for a baseline method (ifd/judge) on hand-made score tables; returns the selected
    ids and the paths of the subset files (alpaca, sharegpt, manifest)."""
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"fingerprint": "fp"}))
    out = {k: tmp_path / f"subset.{k}.json" for k in ("alpaca", "sharegpt", "manifest")}
    settings = {"threshold": score_paths.pop("judge_threshold")} if "judge_threshold" in score_paths else {}
    scores_path = next(iter(score_paths.values()), None)
    selected = make_subset_from_files(method, proportion, samples_path, report, settings, out["alpaca"],
                                      out["sharegpt"], out["manifest"], scores_path)
    return selected, out


def _ifd_shard_file(path, ids, ifd, meta=None):
    n = len(ids)
    table = pa.table({"id": pa.array(ids, pa.string()), "loss_conditioned": pa.array(ifd, pa.float64()),
                      "loss_response": pa.array([1.0] * n, pa.float64()), "ifd": pa.array(ifd, pa.float64()),
                      "n_response_tokens": pa.array([3] * n, pa.int32()),
                      "truncated": pa.array([i == "s1" for i in ids], pa.bool_())})
    write_parquet_atomic(table, path, meta or {"model": "tinya", "model_fingerprint": "f", "max_length": 64,
                                               "dtype": "torch.float32", "prompt": IFD_PROMPT})
    return path


def test_merge_refuses_missing_duplicate_and_stale_shards(tmp_path):
    samples, samples_path = _samples_file(tmp_path, 6)
    a = _ifd_shard_file(tmp_path / "a.parquet", ["s4", "s0", "s2"], [0.5, 1.5, 0.7])
    b = _ifd_shard_file(tmp_path / "b.parquet", ["s1", "s5", "s3"], [0.9, 0.2, 1.0])
    out = tmp_path / "ifd.parquet"
    with pytest.raises(IncompleteRatingsError, match=r"3 samples missing: 's1', 's3', 's5'"):
        merge_ifd_files([a], samples_path, out)
    with pytest.raises(IncompleteRatingsError, match=r"'s4' in \[.*a.parquet.*a.parquet"):
        merge_ifd_files([a, b, a], samples_path, out)
    extra = _ifd_shard_file(tmp_path / "c.parquet", ["s9"], [0.1])
    with pytest.raises(IncompleteRatingsError, match=r"1 ids not in .*samples.parquet: 's9'"):
        merge_ifd_files([a, b, extra], samples_path, out)
    stale = _ifd_shard_file(tmp_path / "d.parquet", ["s1", "s5", "s3"], [0.9, 0.2, 1.0],
                            {"model": "tinyb", "model_fingerprint": "g", "max_length": 64, "dtype": "torch.float32",
                             "prompt": IFD_PROMPT})
    with pytest.raises(IncompleteRatingsError, match="d.parquet was made with other settings.*model"):
        merge_ifd_files([a, stale], samples_path, out)
    assert not out.exists()
    merge_ifd_files([b, a], samples_path, out)
    merged = pq.read_table(out)
    assert merged.column("id").to_pylist() == samples["id"].tolist()  # aligned with the samples
    assert merged.column("ifd").to_pylist() == [1.5, 0.9, 0.7, 1.0, 0.5, 0.2]
    meta = json.loads(merged.schema.metadata[b"selectit"])
    assert meta["model"] == "tinya" and meta["n_ifd_at_least_1"] == 2 and meta["n_truncated"] == 1


def test_ifd_subset_and_manifest_counts(tmp_path, tiny_model_dir):
    samples, samples_path = _samples_file(tmp_path, 6)
    ifd = _ifd_shard_file(tmp_path / "a.parquet", samples["id"].tolist(), [1.5, 0.9, 0.7, 1.0, 0.5, 0.2])
    merged = tmp_path / "ifd.parquet"
    merge_ifd_files([ifd], samples_path, merged)
    model_json = tiny_model_dir / "model.json"
    selected, out = _baseline_subset(tmp_path, samples_path, model_json, "ifd", 0.5, ifd_path=merged)
    assert selected == ["s1", "s2", "s4"]
    manifest = json.loads(out["manifest"].read_text())
    assert manifest["selected_ids"] == selected
    assert manifest["ifd"]["model"] == "tinya"
    assert manifest["ifd"]["n_ifd_at_least_1"] == 2 and manifest["ifd"]["n_selected_ifd_at_least_1"] == 0
    assert [r["id"] for r in json.loads(out["alpaca"].read_text())] == selected
    # the whole data: IFD >= 1 last, the ones just at 1 before the larger
    selected, out = _baseline_subset(tmp_path, samples_path, model_json, "ifd", 1.0, ifd_path=merged)
    assert selected[-2:] == ["s3", "s0"]
    assert json.loads(out["manifest"].read_text())["ifd"]["n_selected_ifd_at_least_1"] == 2
    with pytest.raises(InputError, match="needs its score table"):
        _baseline_subset(tmp_path, samples_path, model_json, "ifd", 0.5)
