"""Tensor-parallel rating (models.<name>.gpus > 1 for an architecture with a tensor-parallel plan): a rating job
launches that many torchrun processes, here on the CPU over gloo, each holding half of every layer of a tiny
random-weight Llama; the shard equals the unsplit model's."""

import json

import numpy as np
import pyarrow.parquet as pq

from selectit.data import normalise
from selectit.gpus import LOCAL_GPUS_ENV, pinned_gpus
from selectit.models import LAYER_SPLIT, ONE_DEVICE, TENSOR_PARALLEL, parallel_mode
from selectit.prompts import RatingPrompt
from selectit.rating import rate_shard_file, rate_tensor_parallel
from selectit.scoring import select_top, token_level

PROMPT = RatingPrompt("Rate the response from 1 to 5.\n", 1)


def _shard(n=16):
    recs = [{"instruction": f"Question number {i}?", "input": "",
             "output": ("A longer answer. " * (i % 5 + 1) * 4) + str(i)} for i in range(n)]
    return normalise(recs, "t.json")[0]


def _read(path):
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"selectit"])
    return table.to_pandas(), np.stack(table.column("logits").to_pylist()), meta


def test_tensor_parallel_rating_equals_the_unsplit_model(tiny_model_dir, tmp_path, monkeypatch):
    """gpus: 2 -> two processes (gloo), each with half of every layer, pinned to the two GPUs the local job locked;
    only the first writes the shard; fp32 logits within 1e-4 of the unsplit model's, the same SelectIT selection;
    the prompt prefix is reused and rows are batched as in one process."""
    shard = _shard()
    assert parallel_mode(tiny_model_dir, 2)[0] == TENSOR_PARALLEL
    whole = rate_shard_file(tiny_model_dir, shard, PROMPT, 5, 512, tmp_path / "whole.parquet", dtype="fp32",
                            token_budget=600, threads=1)
    monkeypatch.setenv(LOCAL_GPUS_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pinned_gpus(2, tmp_path / "locks"):
        split = rate_shard_file(tiny_model_dir, shard, PROMPT, 5, 512, tmp_path / "tp" / "ratings.parquet",
                                dtype="fp32", token_budget=600, threads=2, gpus=2,
                                stats_path=tmp_path / "tp_stats.json")
    assert whole["parallel"] == {"mode": ONE_DEVICE, "gpus": 1, "processes": 1}
    assert split["parallel"] == {"mode": TENSOR_PARALLEL, "gpus": 2, "processes": 2}
    ranks = split["processes"]
    assert [p["rank"] for p in ranks] == [0, 1] and len({p["pid"] for p in ranks}) == 2
    assert all(p["cuda_visible_devices"] == "0,1" for p in ranks)  # the job's locked GPUs, inherited by both
    assert all(abs(p["layer_share"] - 0.5) < 0.01 for p in ranks)  # each holds half of every layer (norms whole)
    assert whole["processes"][0]["layer_share"] == 1.0
    assert json.loads((tmp_path / "tp_stats.json").read_text())["processes"] == ranks
    assert [p.name for p in (tmp_path / "tp").iterdir()] == ["ratings.parquet"]  # one writer, no leftovers
    ref, ref_logits, _ = _read(tmp_path / "whole.parquet")
    got, got_logits, meta = _read(tmp_path / "tp" / "ratings.parquet")
    assert meta["parallel"]["mode"] == TENSOR_PARALLEL and meta["parallel"]["processes"] == 2
    assert got[["id", "prompt_id", "n_tokens", "truncated"]].equals(ref[["id", "prompt_id", "n_tokens", "truncated"]])
    np.testing.assert_allclose(got_logits, ref_logits, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["score_mass"], ref["score_mass"], atol=1e-5, rtol=0)
    assert split["prefix_rows"] == whole["prefix_rows"] == len(shard)
    assert split["batches"] == whole["batches"] > 1
    for proportion in (0.25, 0.5):
        assert list(select_top(token_level(got_logits), proportion)) == list(
            select_top(token_level(ref_logits), proportion))


def test_an_out_of_memory_in_one_process_splits_the_batch_in_all(tiny_model_dir, tmp_path):
    """Process 1 alone runs out of memory on a batch (tests/tp_oom_worker.py): both processes split it (otherwise
    they would wait on each other's collectives for ever) and the logits are still the unsplit model's."""
    shard = _shard(12)
    rate_shard_file(tiny_model_dir, shard, PROMPT, 5, 512, tmp_path / "whole.parquet", dtype="fp32", threads=1)
    stats = rate_tensor_parallel(tiny_model_dir, shard, PROMPT, 5, 512, tmp_path / "tp.parquet", "fp32", 8192, 2,
                                 None, None, 2, "test", worker="tests.tp_oom_worker")
    assert stats["oom_splits"] >= 1  # counted by process 0, which did not run out of memory itself
    np.testing.assert_allclose(_read(tmp_path / "tp.parquet")[1], _read(tmp_path / "whole.parquet")[1], atol=1e-4)


def test_an_architecture_without_a_plan_falls_back_to_the_layer_split(smollm2_tokenizer_dir, tmp_path):
    """GPT-2 has no tensor-parallel plan in transformers, and a Llama whose heads do not divide over the GPUs
    cannot use its plan: both run with their layers split (one process), and the shard's metadata says so."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig

    from selectit.models import MODEL_JSON

    odd = tmp_path / "odd"
    LlamaConfig(num_attention_heads=3, num_key_value_heads=3, hidden_size=48).save_pretrained(odd)
    mode, why = parallel_mode(odd, 2)
    assert mode == LAYER_SPLIT and "num_attention_heads = 3" in why
    assert parallel_mode(odd, 1)[0] == ONE_DEVICE

    folder = tmp_path / "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / MODEL_JSON).write_text(json.dumps({"name": "gpt2", "fingerprint": "tiny-gpt2", "theta": 1}))
    mode, why = parallel_mode(folder, 2)
    assert mode == LAYER_SPLIT and "GPT2LMHeadModel has no tensor-parallel plan" in why
    stats = rate_shard_file(folder, _shard(4), PROMPT, 5, 512, tmp_path / "r.parquet", dtype="fp32", threads=1,
                            gpus=2)
    assert stats["parallel"] == {"mode": LAYER_SPLIT, "gpus": 2, "processes": 1}
    assert _read(tmp_path / "r.parquet")[2]["parallel"]["mode"] == LAYER_SPLIT
