"""AlpaGasus-style judge baseline: expected score, score-token lookup, the hf judge against one-by-one forward
passes, the openai judge against a local fake endpoint, merging, the `judge` selection, and a workflow run of
both baselines (IFD and judge)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from selectit.errors import IncompleteRatingsError, InputError
from selectit.judge import (
    JUDGE_PROMPT,
    expected_score,
    hf_judge_shard,
    judge_settings,
    judge_shard_file,
    judge_text,
    merge_judge_files,
    parse_score,
    score_prefix_and_ids,
)
from selectit.selection import judge_order, parse_method, select_ids
from tests.fake_openai import chat_server
from tests.test_ifd import _baseline_subset, _samples_file
from tests.workflow_helpers import job_counts, snakemake, write_tiny_config


def test_expected_score_from_known_probabilities():
    probs = np.array([[0.0, 0.0, 0.0, 0.0, 0.5, 0.5],
                      [0.1, 0.1, 0.2, 0.2, 0.2, 0.2],
                      [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    logits = np.log(np.clip(probs, 1e-300, None)) + 7.0  # a constant shift changes nothing
    assert expected_score(logits) == pytest.approx([4.5, 0.1 + 0.4 + 0.6 + 0.8 + 1.0, 0.0])
    assert expected_score(np.zeros((1, 6))) == pytest.approx([2.5])  # uniform


def test_parse_score():
    assert parse_score("Score: 4\nThe answer is right.") == 4.0
    assert parse_score("score = 4.5 because ...") == 4.5
    assert parse_score("I rate it 3. Score: 5") == 5.0  # the first number after "Score"
    assert parse_score("Score: 5/5") == 5.0
    for bad in ("Score: 7", "Score: -1", "The answer is fine.", "4", "Score: none", "", None):
        assert parse_score(bad) is None, bad


class _GluedDigits:
    """A GPT-2-style tokenizer: a space is glued to the digit after it (" 4" is one token)."""

    def __call__(self, text, add_special_tokens=True):
        import re

        return type("Enc", (), {"input_ids": [hash(t) % 10**6 for t in re.findall(r" ?\d|\D", text)]})()


def test_score_tokens_both_tokenizer_styles(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    prefix, ids = score_prefix_and_ids(tok, judge_text(tok, "Add 2 and 3.", "5"))
    assert prefix == "Score: " and [tok.decode([i]) for i in ids] == ["0", "1", "2", "3", "4", "5"]
    prefix, ids = score_prefix_and_ids(_GluedDigits(), "User: rate it\n\nAssistant: ")
    assert prefix == "Score:" and len(set(ids)) == 6


def _shard(records):
    return pd.DataFrame({"id": [f"s{i}" for i in range(len(records))],
                         "instruction": [r[0] for r in records], "response": [r[1] for r in records]})


RECORDS = [("Add 2 and 3.", "5"), ("Name a colour.", "Blue."),
           ("Explain recursion.", "A function that calls itself on a smaller problem. " * 30),
           ("Write a haiku about rain.", "Rain taps on the roof\nsoft drums in the dark night\nmorning finds puddles")]


def test_hf_judge_equals_one_by_one_forward(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32, device="cpu")
    table, stats = hf_judge_shard(_shard(RECORDS), model, tok, max_length=400, token_budget=800, progress=False)
    out = table.to_pandas()
    assert stats["answer_prefix"] == "Score: " and stats["prefix_rows"] >= 1
    assert out["truncated"].tolist() == [False, False, True, False]
    _, ids = score_prefix_and_ids(tok, judge_text(tok, "x", "y"))
    for k, (instruction, response) in enumerate(RECORDS):
        if out.loc[k, "truncated"]:
            continue
        text = judge_text(tok, instruction, response) + "Score: "
        x = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.inference_mode():
            logits = model(input_ids=x).logits[0, -1].float()
        want = expected_score(logits[ids].numpy()[None])[0]
        assert out.loc[k, "score"] == pytest.approx(want, abs=1e-4)
        assert out.loc[k, "score_mass"] == pytest.approx(float(torch.softmax(logits, -1)[ids].sum()), rel=1e-3)
    assert 0 <= out["score"].min() and out["score"].max() <= 5 and not out["unparsed"].any()


def _score_reply(body: dict) -> str:
    """"Score: <number of words in the response mod 6>", or an answer with no score when the response says
    "unratable"."""
    message = body["messages"][-1]["content"]
    response = message.split("### Response\n", 1)[1].split("\n\n### Your task", 1)[0]
    return ("I would rather not say." if "unratable" in response
            else f"Score: {len(response.split()) % 6}\nBecause it has that many words.")


@pytest.fixture
def fake_score_server():
    with chat_server(_score_reply) as (url, requests):
        yield url, requests


def test_openai_judge_parses_scores_and_counts_unparsed(fake_score_server, tmp_path, monkeypatch):
    url, reqs = fake_score_server
    monkeypatch.setenv("SELECTIT_TEST_JUDGE_KEY", "sk-test-judge")
    records = [("q0", "one two three"), ("q1", "this one is unratable"), ("q2", "a b c d e f g h i j k")]
    samples, samples_path = _samples_file(tmp_path, 3)
    settings = judge_settings({"type": "openai", "model": "judge-model", "base_url": url,
                               "api_key_env": "SELECTIT_TEST_JUDGE_KEY", "num_workers": 2}, "tinya")
    shard = _shard(records)
    out = tmp_path / "judge" / "shard000.parquet"
    stats = judge_shard_file(settings, shard, out)
    table = pq.read_table(out).to_pandas()
    assert table["id"].tolist() == ["s0", "s1", "s2"]
    assert table["score"].tolist()[0] == 3.0 and np.isnan(table["score"][1]) and table["score"][2] == 11 % 6
    assert table["unparsed"].tolist() == [False, True, False] and stats["unparsed"] == 1
    assert table["answer"][1] == "I would rather not say."
    assert len(reqs) == 3 and all(r["auth"] == "Bearer sk-test-judge" for r in reqs)
    assert all(r["body"]["model"] == "judge-model" and r["body"]["temperature"] == 0 for r in reqs)
    first = next(r for r in reqs if "one two three" in r["body"]["messages"][0]["content"])
    assert first["body"]["messages"][0]["content"] == JUDGE_PROMPT.format(instruction="q0", response="one two three")
    merged = tmp_path / "judge.parquet"
    with pytest.raises(InputError, match=r"no parseable score 0-5 for 1 samples: 's1'"):
        merge_judge_files([out], samples_path, merged, on_unparsed="error")
    meta = merge_judge_files([out], samples_path, merged)
    assert meta["n_unparsed"] == 1 and meta["model"] == "judge-model" and "sk-test" not in merged.read_bytes().decode(
        "latin-1")
    with pytest.raises(IncompleteRatingsError, match=r"'s0' in"):
        merge_judge_files([out, out], samples_path, merged)


def test_judge_settings_defaults_and_errors():
    hf = judge_settings({}, "smollm2")
    assert hf["type"] == "hf" and hf["model_dir"] == "results/models/smollm2" and hf["threshold"] == 4.5
    with pytest.raises(InputError, match=r"unknown keys \['base_url'\] for type 'hf'"):
        judge_settings({"type": "hf", "base_url": "http://x"}, "smollm2")
    with pytest.raises(InputError, match="must be 'hf' or 'openai'"):
        judge_settings({"type": "gpt"}, "smollm2")


def test_judge_order_and_subset_manifest(tmp_path, tiny_model_dir):
    scores = np.array([4.0, 5.0, np.nan, 4.0, 4.5, 1.0])
    # best first, ties to the earlier sample, unparsed (NaN) last
    assert judge_order(scores).tolist() == [1, 4, 0, 3, 5, 2]
    samples, samples_path = _samples_file(tmp_path, 6)
    frame = pd.DataFrame({"id": samples["id"], "score": scores})
    assert select_ids(parse_method("judge"), 0.5, samples, frame, 0) == ["s1", "s4", "s0"]
    import pyarrow as pa

    from selectit.judge import JUDGE_SCHEMA
    from selectit.atomic import write_parquet_atomic

    shard = pa.table({"id": samples["id"].tolist(), "score": scores, "unparsed": np.isnan(scores),
                      "truncated": [False] * 6, "score_mass": [np.nan] * 6, "answer": [""] * 6}, schema=JUDGE_SCHEMA)
    write_parquet_atomic(shard, tmp_path / "s.parquet", {"type": "openai", "model": "m", "prompt_sha": "x"})
    merge_judge_files([tmp_path / "s.parquet"], samples_path, tmp_path / "judge.parquet")
    selected, out = _baseline_subset(tmp_path, samples_path, tiny_model_dir / "model.json", "judge", 0.5,
                                     judge_path=tmp_path / "judge.parquet", judge_threshold=4.5)
    assert selected == ["s1", "s4", "s0"]
    judge = json.loads(out["manifest"].read_text())["judge"]
    assert judge["threshold"] == 4.5 and judge["n_at_least_threshold"] == 2
    assert judge["n_selected_below_threshold"] == 1 and judge["n_unparsed"] == 1 and judge["n_selected_unparsed"] == 0


def test_workflow_builds_ifd_and_judge_subsets(tmp_path, tiny_models):
    models = {"tinya": tiny_models["tinya"]}
    selection = {"methods": ["ifd", "judge"], "proportions": [0.25], "seed": 0,
                 "ifd": {"max_length": 128, "token_budget": 1024}, "judge": {"type": "hf", "max_length": 512}}
    write_tiny_config(tmp_path, models, selection=selection)
    counts = job_counts(tmp_path)
    assert counts["ifd_shard"] == 2 and counts["judge_shard"] == 2  # one per shard
    assert counts["merge_ifd"] == counts["merge_judge"] == 1 and counts["select_subset"] == 2
    snakemake(tmp_path, "--cores", "2")
    for method in ("ifd", "judge"):
        subset = json.loads((tmp_path / f"results/subsets/tiny/{method}/0.25.json").read_text())
        manifest = json.loads((tmp_path / f"results/subsets/tiny/{method}/0.25.manifest.json").read_text())
        assert len(subset) == 6 and manifest["selected_ids"] == [r["id"] for r in subset]  # int(24 * 0.25)
    ifd = pq.read_table(tmp_path / "results/scores/tiny/ifd.parquet").to_pandas()
    assert len(ifd) == 24 and (ifd["ifd"] > 0).all()
    manifest = json.loads((tmp_path / "results/subsets/tiny/judge/0.25.manifest.json").read_text())
    assert manifest["judge"]["model"] == "tinya" and manifest["judge"]["threshold"] == 4.5
    assert json.loads((tmp_path / "results/subsets/tiny/ifd/0.25.manifest.json").read_text())["ifd"]["model"] == "tinya"
    assert job_counts(tmp_path) == {}
    # a threshold edit reruns only the judge subset: no IFD or judge scoring
    write_tiny_config(tmp_path, models, selection={**selection, "judge": {**selection["judge"], "threshold": 2.4}})
    counts = job_counts(tmp_path)
    assert {k: n for k, n in counts.items() if k != "all"} == {"select_subset": 1}
    snakemake(tmp_path, "--cores", "1")
    judge = json.loads((tmp_path / "results/subsets/tiny/judge/0.25.manifest.json").read_text())["judge"]
    scores = pq.read_table(tmp_path / "results/scores/tiny/judge.parquet").column("score").to_numpy()
    assert judge["threshold"] == 2.4 and judge["n_at_least_threshold"] == int((scores >= 2.4).sum())
