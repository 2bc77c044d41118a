"""The ``cherry`` IFD variant against an independent re-computation of Cherry_LLM's released IFD
(tianyi-lab/Cherry_LLM ``cherry_seletion/data_analysis.py --mod cherry --prompt alpaca`` and
``data_by_IFD.py``) on real records of its own Alpaca subset.

The reference here follows Cherry's steps one record at a time, as its scripts do: the per-position token
losses of the whole (unpadded) sequence from the model's logits, the scored span found with
``text.rfind(response)`` and the token count of the text before it, ``loss_list[start - 1:end - 1]``, its
mean, the skip rules and the IFD > 1 drop. The variant under test computes the same numbers batched, with
left padding, from its own token bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from selectit.ifd import encode_cherry, ifd_shard
from selectit.selection import ifd_order
from tests.conftest import SHARED

CHERRY_DATA = SHARED / "data" / "alpaca" / "cherry_alpaca_5_percent.json"
# Stanford Alpaca's prompts, typed from Cherry_LLM's PROMPT_DICT (not imported from selectit, on purpose)
REF_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
             "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n"
             "### Input:\n{input}\n\n### Response:")
REF_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Response:")


def _records(picks):
    data = json.loads(CHERRY_DATA.read_text(encoding="utf-8"))
    return [data[i] for i in picks]


def _token_losses(model, ids):
    """Cherry's token-wise loss list: entry i - 1 is the loss of token i given tokens < i (one sequence)."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(-logp[i - 1, ids[i]]) for i in range(1, len(ids))]


def reference_ifd(model, tok, rec, max_length):
    """(IFD or None when Cherry skips the record, mean loss alone, mean loss conditioned)."""
    def encode(text, limit=None):
        if limit is None:
            return tok.encode(text)
        return tok.encode(text, truncation=True, max_length=limit)

    instruction, inp, output = rec["instruction"], rec.get("input", ""), rec["output"]
    prompt = REF_NO_INPUT.format(instruction=instruction) if inp == "" else \
        REF_INPUT.format(instruction=instruction, input=inp)
    whole, direct = prompt + output, "### Response:" + output
    instruct_len = len(encode(prompt, max_length))
    alone_limit = max_length - instruct_len - 2
    if not alone_limit > 4:
        return None, None, None

    def part(text, limit):
        ids = encode(text, limit)
        start = len(encode(text[:text.rfind(output)]))
        losses = _token_losses(model, ids)
        return len(ids) - start, np.array(losses[start - 1:len(ids) - 1])

    len_1, loss_1 = part(direct, alone_limit)
    len_2, loss_2 = part(whole, max_length)
    if len_1 <= 0 or len_2 <= 0 or instruct_len + len_1 > max_length:
        return None, None, None
    mean_1, mean_2 = loss_1.mean(), loss_2.mean()
    return mean_2 / mean_1, mean_1, mean_2


def _shard(records):
    return pd.DataFrame({"id": [f"r{i}" for i in range(len(records))],
                         "instruction": [r["instruction"] for r in records],
                         "input": [r["input"] for r in records],
                         "response": [r["output"] for r in records]})


def _compare(model, tok, records, max_length, token_budget):
    table, stats = ifd_shard(_shard(records), model, tok, max_length=max_length, token_budget=token_budget,
                             variant="cherry")
    out = table.to_pandas()
    ref = [reference_ifd(model, tok, r, max_length) for r in records]
    ref_ifd = np.array([np.nan if x[0] is None else x[0] for x in ref])
    # the same records are undefined; elsewhere both losses and the IFD agree
    assert np.isnan(out["ifd"].to_numpy()).tolist() == np.isnan(ref_ifd).tolist()
    ok = ~np.isnan(ref_ifd)
    np.testing.assert_allclose(out["loss_response"][ok], [x[1] for x in ref if x[0] is not None], rtol=2e-4)
    np.testing.assert_allclose(out["loss_conditioned"][ok], [x[2] for x in ref if x[0] is not None], rtol=2e-4)
    return out, ref_ifd, stats


def _agreement(ours, ref):
    from scipy.stats import spearmanr

    ok = ~np.isnan(ref)
    return float(np.max(np.abs(ours[ok] - ref[ok]))), float(spearmanr(ours[ok], ref[ok]).statistic)


PICKS = list(range(24)) + [1910, 1129, 1159]  # the first 24 (11 with an input) and the three longest records
# SmolLM2 on a shared 2-core CPU: 12 of them (5 with an input, one cut at 512 tokens) take a few minutes
SMOL_PICKS = list(range(11)) + [1910]


@pytest.mark.slow
def test_cherry_ifd_replays_the_released_computation_with_smollm2(smollm2_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(smollm2_model_dir, dtype=torch.float32, device="cpu")
    records = _records(SMOL_PICKS)
    out, ref, stats = _compare(model, tok, records, max_length=512, token_budget=4096)
    max_diff, rho = _agreement(out["ifd"].to_numpy(), ref)
    print(f"\ncherry vs independent, SmolLM2, {int((~np.isnan(ref)).sum())} records: max |dIFD| = {max_diff:.2e}, "
          f"Spearman = {rho:.6f}; truncated {stats['truncated_rows']}, IFD > 1: {int((ref > 1).sum())}")
    assert max_diff < 1e-4 and rho > 0.9999
    assert stats["truncated_rows"] >= 1  # the long record is cut at 512 tokens
    # the default variant is another quantity: the same records get other IFDs
    simple, _ = ifd_shard(_shard(records[:6]), model, tok, max_length=512, token_budget=4096)
    assert np.abs(simple.column("ifd").to_numpy() - out["ifd"].to_numpy()[:6]).max() > 1e-2


def test_cherry_ifd_with_a_bos_tokenizer_truncation_and_skips(tmp_path):
    """A Llama-style tokenizer (adds BOS, Metaspace) on a tiny random Llama: the alone text starts with BOS +
    "### Response:"; a small max_length exercises both truncations and Cherry's skip of a long prompt."""
    import torch

    from selectit.models import load_prepared, make_tiny_random_model
    from tests.llama_style import llama_style_tokenizer

    records = _records(PICKS)
    corpus = [r["instruction"] + "\n" + r["input"] + "\n" + r["output"] for r in records]
    tok = llama_style_tokenizer(corpus + [REF_INPUT, REF_NO_INPUT], vocab_size=800)
    tok.save_pretrained(tmp_path / "tok")
    make_tiny_random_model(tmp_path / "llama", tmp_path / "tok", seed=3)
    model, tok = load_prepared(tmp_path / "llama", dtype=torch.float32, device="cpu")
    assert tok("x").input_ids[0] == tok.bos_token_id
    # the alone sequence is BOS + the answer marker + the response: the response is not scored after BOS only
    rec = records[0]
    pair = encode_cherry(tok, rec["instruction"], rec["input"], rec["output"], 512)
    marker = tok("### Response:").input_ids
    assert pair.response_only[:len(marker)] == marker and marker[0] == tok.bos_token_id
    assert len(pair.response_only) - pair.n_alone == len(marker)
    # a long prompt at max_length 96 leaves <= 4 tokens of room: undefined (NaN), ranked last
    long_prompt = {"instruction": records[1]["instruction"] * 8, "input": "", "output": "Yes."}
    out, ref, stats = _compare(model, tok, records + [long_prompt], max_length=96, token_budget=512)
    assert np.isnan(out["ifd"].iloc[-1]) and stats["ifd_undefined"] >= 1
    assert stats["truncated_rows"] > len(records) // 2
    max_diff, rho = _agreement(out["ifd"].to_numpy(), ref)
    print(f"\ncherry vs independent, tiny Llama-style BOS model: max |dIFD| = {max_diff:.2e}, Spearman = {rho:.6f}")
    assert max_diff < 1e-4 and rho > 0.9999
    assert ifd_order(out["ifd"].to_numpy())[-1] == len(records)


def test_variant_reaches_the_ifd_jobs_and_the_paper_config_uses_cherry():
    """The variant is an ifd_shard param (a change re-runs the IFD shards) and the paper's choice is cherry
    at Cherry's truncation length; the schema default keeps the simple variant."""
    import re

    import yaml

    from tests.conftest import REPO

    rule = (REPO / "rules" / "baselines.smk").read_text()
    params = rule[rule.index("rule ifd_shard:"):rule.index("rule merge_ifd:")]
    assert re.search(r'variant=IFD\["variant"\]', params)
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    ifd = schema["properties"]["selection"]["properties"]["ifd"]["properties"]
    assert ifd["variant"]["default"] == "simple" and ifd["variant"]["enum"] == ["simple", "cherry"]
    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    assert paper["selection"]["ifd"]["variant"] == "cherry" and paper["selection"]["ifd"]["max_length"] == 512


def test_the_ifd_job_reads_the_raw_alpaca_fields_for_cherry():
    """The sample table joins instruction and input; the cherry jobs get them apart again from the source."""
    from selectit.data import load_shard
    from selectit.ifd import cherry_prompt, load_ifd_shard

    spec = {"path": str(CHERRY_DATA), "format": "alpaca", "n_shards": 8}
    raw = {(r["instruction"], r["input"], r["output"]) for r in json.loads(CHERRY_DATA.read_text(encoding="utf-8"))}
    plain = load_shard(spec, "shard003")
    rows = load_ifd_shard(spec, "shard003", "cherry")
    assert rows["id"].tolist() == plain["id"].tolist() and rows["response"].tolist() == plain["response"].tolist()
    with_input = rows[rows["input"] != ""]
    assert len(with_input) > 10
    for _, r in rows.iterrows():
        assert (r["instruction"], r["input"], r["response"]) in raw
    r = with_input.iloc[0]
    assert plain.set_index("id").loc[r["id"], "instruction"] == r["instruction"] + "\n" + r["input"]
    assert "### Input:\n" + r["input"] + "\n\n### Response:" in cherry_prompt(r["instruction"], r["input"])
    assert "input" not in load_ifd_shard(spec, "shard003", "simple")
