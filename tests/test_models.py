"""prepare_model for `hf:` models: the weight files as they are (linked, never loaded), theta counted on the meta
device, only the safetensors files transformers loads; hub ids downloaded at a pinned commit."""

import json
import os
from pathlib import Path

import pytest
import torch

from selectit.errors import InputError
from selectit.models import load_prepared, prepare_model


def _logits(folder, text="Instruction: add 2 and 3"):
    model, tokenizer = load_prepared(folder, dtype=torch.float32, device="cpu")
    with torch.inference_mode():
        return model(**tokenizer(text, return_tensors="pt")).logits


def _copy_model(src: Path, dst: Path, dtype=None, **save_kwargs) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32)
    model.save_pretrained(dst, **save_kwargs)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def test_a_local_folder_is_copied_not_loaded(tiny_model_dir, tmp_path, monkeypatch):
    import transformers

    expected = _logits(tiny_model_dir)
    theta = sum(p.numel() for p in transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())

    def no_loading(*args, **kwargs):
        raise AssertionError("prepare_model loaded the weights of an hf: model with safetensors")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    info = prepare_model("tiny", {"hf": str(tiny_model_dir)}, tmp_path / "tiny")
    monkeypatch.undo()

    out = tmp_path / "tiny"
    assert info["theta"] == theta and info["saved_dtype"] == "float32"
    assert info["architecture"] == "LlamaForCausalLM"
    assert json.loads((out / "model.json").read_text()) == info
    # a copy: a save_pretrained into the source folder rewrites its file in place, which must not reach here
    assert not os.path.samefile(out / "model.safetensors", tiny_model_dir / "model.safetensors")
    assert (out / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert torch.equal(_logits(out), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # no temporary folder left


def test_a_sharded_bf16_checkpoint_keeps_its_dtype_and_only_the_indexed_shards(tiny_model_dir, tmp_path):
    src = _copy_model(tiny_model_dir, tmp_path / "src", dtype=torch.bfloat16, max_shard_size="100KB")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    (src / "consolidated.safetensors").write_bytes(b"another copy of the weights")  # as some hub repos hold

    info = prepare_model("tiny", {"hf": str(src)}, tmp_path / "out")
    out = tmp_path / "out"
    assert info["saved_dtype"] == "bfloat16"
    assert sorted(p.name for p in out.glob("*.safetensors*")) == sorted(["model.safetensors.index.json", *shards])
    model, _ = load_prepared(out, dtype=None, device="cpu")
    assert model.num_parameters() == info["theta"]
    assert torch.equal(_logits(out), _logits(src))


def test_a_missing_shard_is_named(tiny_model_dir, tmp_path):
    src = _copy_model(tiny_model_dir, tmp_path / "src", max_shard_size="100KB")
    shard = sorted(src.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(InputError, match=shard.name):
        prepare_model("tiny", {"hf": str(src)}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_hub_id_downloads_config_then_the_listed_shards_at_one_commit(tiny_model_dir, tmp_path, monkeypatch):
    import huggingface_hub

    src = _copy_model(tiny_model_dir, tmp_path / "hub_copy", max_shard_size="100KB")
    snapshot = tmp_path / "cache" / "snapshots" / "0123abcd"
    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None):
        import fnmatch
        import shutil

        calls.append((repo_id, revision, list(allow_patterns)))
        snapshot.mkdir(parents=True, exist_ok=True)
        for path in src.iterdir():
            if any(fnmatch.fnmatch(path.name, p) for p in allow_patterns):
                shutil.copyfile(path, snapshot / path.name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    info = prepare_model("tiny", {"hf": "org/tiny", "revision": "v1"}, tmp_path / "out")
    assert info["fingerprint"] == "org/tiny@0123abcd"
    assert info["source"] == {"hf": "org/tiny", "revision": "v1"}
    shards = sorted(p.name for p in src.glob("model-*.safetensors"))
    assert [c[:2] for c in calls] == [("org/tiny", "v1")] * 2
    assert not any(s in calls[0][2] for s in shards) and all(s in calls[1][2] for s in shards)
    assert not any(p.endswith(".bin") or p == "*.safetensors" for c in calls for p in c[2])
    assert torch.equal(_logits(tmp_path / "out"), _logits(src))
    for shard in shards:  # hub blobs are never rewritten: hard links, no second copy
        assert os.path.samefile(tmp_path / "out" / shard, snapshot / shard)


def test_a_model_set_to_several_gpus_is_split_across_them_or_told_why_not(monkeypatch):
    from types import SimpleNamespace

    from selectit.models import split_device_map

    assert split_device_map(1) == {}
    assert split_device_map(4) == {}  # no CUDA here: the model runs whole on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 << 30))
    assert split_device_map(2) == {"device_map": "auto", "max_memory": {0: 80 << 30, 1: 80 << 30}}
    with pytest.raises(InputError, match="4 GPUs .* this job sees 2"):
        split_device_map(4)


def test_a_model_split_by_accelerate_rates_like_the_whole_model(tiny_model_dir, tmp_path):
    """The nearest a CPU machine has to a model split across GPUs: accelerate dispatches the layers over two
    devices (the second layer offloaded to disk, run through the same hooks that move tensors between GPUs)."""
    import numpy as np
    import pandas as pd
    from transformers import AutoModelForCausalLM

    from selectit.engines.hf_rater import Rater
    from selectit.models import split_across_devices
    from selectit.prompts import RatingPrompt
    from selectit.rating import rate_shard

    whole, tokenizer = load_prepared(tiny_model_dir, dtype=torch.float32, device="cpu")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    split = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa",
                                                 device_map=device_map, offload_folder=str(tmp_path)).eval()
    assert split_across_devices(split) and not split_across_devices(whole)

    shard = pd.DataFrame({"id": [f"r{i}" for i in range(6)], "instruction": [f"What is {i} plus {i}?" for i in range(6)],
                          "response": [f"It is {2 * i}." * (i + 1) for i in range(6)]})
    prompt = RatingPrompt(text="Rate the response from 1 to 5.\n", position=1)
    expected, _ = rate_shard(shard, prompt, whole, tokenizer, 5, 256, progress=False, compile=False)
    got, stats = rate_shard(shard, prompt, split, tokenizer, 5, 256, progress=False)
    assert stats["prefix_rows"] == 6 and "prefix_unavailable" not in stats  # the prefix is reused through the hooks
    np.testing.assert_array_equal(np.stack(got.column("logits").to_pylist()),
                                  np.stack(expected.column("logits").to_pylist()))

    rater = Rater(split, tokenizer, 5, compile=None, progress=False)
    rater._set_compile(10**12)  # far above the CPU threshold: a whole model would compile
    assert not rater.compiled


def test_a_hub_id_that_cannot_be_fetched_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    with pytest.raises(InputError, match=r"model 'llama': could not load 'meta-llama/Llama-2-7b-hf'.*needs internet"):
        prepare_model("llama", {"hf": "meta-llama/Llama-2-7b-hf"}, tmp_path / "llama")
    assert not (tmp_path / "llama").exists()
