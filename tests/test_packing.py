"""Padding-free fine-tuning (selectit.training.PackedCollator) is exact: on real Alpaca records, per-example
logits, the loss and the gradients of a packed micro-batch equal the padded batch's in fp32, for a Llama-style
and a Gemma-style (sliding-window) tiny model; the same test fails when the block-diagonal mask is removed or
when a KV cache hides the packed sequences from the mask; and two short fine-tunes, packed and padded, log the
same losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selectit.training import (
    DEFAULT_TEMPLATE,
    PACKED_SDPA,
    IGNORE_INDEX,
    RESULT_JSON,
    BatchCounter,
    PackedCollator,
    SFTCollator,
    register_packed_sdpa,
    make_collator,
    resolve_settings,
    tokenize_subset,
    train,
)
from selectit.batching import fixed_batches, padding_share
from tests.conftest import SHARED

ALPACA = SHARED / "data" / "alpaca" / "alpaca_en_demo.json"
TOL = 1e-5  # relative, fp32


def _real_records(n: int, start: int = 0) -> list[dict]:
    if not ALPACA.is_file():
        pytest.skip(f"{ALPACA} is not there")
    return json.loads(ALPACA.read_text(encoding="utf-8"))[start:start + n]


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def examples(tokenizer):
    data = tokenize_subset(_real_records(6), tokenizer, DEFAULT_TEMPLATE, max_length=512)
    lengths = [len(e["input_ids"]) for e in data.examples]
    assert len(set(lengths)) == len(lengths) > 1  # unequal lengths: the padded batch has padding to ignore
    return data.examples


def _tiny(arch: str, vocab_size: int, attention: str = "sdpa"):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    common = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2}
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True))
    else:  # Gemma-3: a sliding-window layer (window 32, shorter than the examples) and a global one
        model = Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=16, sliding_window=32,
                                                   layer_types=["sliding_attention", "full_attention"]))
    model.config._attn_implementation = "sdpa"
    model.config.use_cache = False  # as selectit.training.train sets it
    model.attention_for_packed = attention  # what _compare runs the packed batch with
    return model.train()


def _forward_backward(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(**batch)
    out.loss.backward()
    return out.logits.detach(), out.loss.detach(), [p.grad.detach().clone() for p in model.parameters()]


def _compare(model, examples, pad_id: int) -> dict[str, float]:
    """Largest per-example logit difference, relative loss and gradient differences, packed vs padded."""
    import torch

    padded_logits, padded_loss, padded_grads = _forward_backward(model, SFTCollator(pad_id)(examples))
    model.set_attn_implementation(model.attention_for_packed)
    assert model.config._attn_implementation == model.attention_for_packed
    try:
        packed_logits, packed_loss, packed_grads = _forward_backward(model, PackedCollator()(examples))
    finally:
        model.set_attn_implementation("sdpa")
    assert packed_logits.shape[0] == 1
    logit_diff, offset = 0.0, 0
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        diff = (padded_logits[row, :n] - packed_logits[0, offset:offset + n]).abs().max().item()
        logit_diff, offset = max(logit_diff, diff), offset + n
    grad_diff = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(padded_grads, packed_grads)))
    grad_norm = torch.sqrt(sum((a ** 2).sum() for a in padded_grads))
    return {"logits": logit_diff / padded_logits.abs().max().item(),
            "loss": abs(padded_loss - packed_loss).item() / abs(padded_loss).item(),
            "grads": (grad_diff / grad_norm).item()}


ATTENTIONS = ["sdpa", register_packed_sdpa()]  # the block-diagonal mask; one example at a time (the CPU default)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_packed_equals_padded_on_real_records(arch, attention, tokenizer, examples) -> None:
    model = _tiny(arch, len(tokenizer), attention)
    diff = _compare(model, examples, tokenizer.pad_token_id)
    print(f"{arch}, {attention}: relative differences {diff}")
    assert diff["logits"] <= TOL and diff["loss"] <= TOL and diff["grads"] <= TOL, diff


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_the_comparison_catches_attention_across_examples(arch, tokenizer, examples, monkeypatch) -> None:
    import transformers.masking_utils as masking

    model = _tiny(arch, len(tokenizer))
    # without the block-diagonal mask (no packed sequences found): one causal mask over the whole row
    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    leaky = _compare(model, examples, tokenizer.pad_token_id)
    # (the loss of a random-weight model is near log(vocab) whatever it attends to: logits and gradients tell)
    assert leaky["logits"] > 1e-2 and leaky["grads"] > 1e-2, leaky
    monkeypatch.undo()
    # a KV cache also hides packed sequences from the mask: why train() switches use_cache off
    model.config.use_cache = True
    assert _compare(model, examples, tokenizer.pad_token_id)["logits"] > 1e-2


@pytest.mark.parametrize("arch", ["llama", "gemma"])
def test_the_comparison_catches_an_uncut_packed_row(arch, tokenizer, examples, monkeypatch) -> None:
    """Per-example attention cuts the row where the position ids restart; with them running on (one example
    as far as it can tell) the comparison fails."""
    model = _tiny(arch, len(tokenizer), PACKED_SDPA)
    original = PackedCollator.__call__

    def running_positions(self, features):
        import torch

        batch = original(self, features)
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1])[None]
        return batch

    monkeypatch.setattr(PackedCollator, "__call__", running_positions)
    leaky = _compare(model, examples, tokenizer.pad_token_id)
    assert leaky["logits"] > 1e-2 and leaky["grads"] > 1e-2, leaky


def test_packed_batch_layout(examples) -> None:
    batch = PackedCollator()(examples)
    lengths = [len(e["input_ids"]) for e in examples]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    positions = batch["position_ids"][0].tolist()
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    assert [positions[s] for s in starts] == [0] * len(lengths)
    assert positions[starts[-1]:] == list(range(lengths[-1]))
    labels = batch["labels"][0].tolist()
    assert labels == [label for e in examples for label in e["labels"]]  # nothing relabelled: prompts start at -100
    assert sum(label != IGNORE_INDEX for label in labels) == sum(
        sum(label != IGNORE_INDEX for label in e["labels"]) for e in examples)
    with pytest.raises(ValueError, match="prompt token"):
        PackedCollator()([{"input_ids": [1, 2], "labels": [1, 2]}])


def test_batch_counter_and_padded_share(examples) -> None:
    lengths = [len(e["input_ids"]) for e in examples]
    padded = BatchCounter()
    padded.count(SFTCollator(0)(examples[:3])), padded.count(SFTCollator(0)(examples[3:]))
    assert padded.summary()["tokens"] == sum(lengths)
    assert padded.summary()["positions"] == 3 * max(lengths[:3]) + 3 * max(lengths[3:])
    in_threes = padding_share(lengths, fixed_batches(len(lengths), 3))
    assert padded.summary()["padded_share"] == pytest.approx(in_threes) and in_threes > 0.2
    packed = BatchCounter()
    packed.count(PackedCollator()(examples[:3])), packed.count(PackedCollator()(examples[3:]))
    assert packed.summary()["padded_share"] == 0.0 and packed.summary()["positions"] == sum(lengths)
    assert padding_share([5, 5, 5], fixed_batches(3, 2)) == 0.0
    assert padding_share([1, 3], fixed_batches(2, 2)) == pytest.approx(2 / 6)


def test_packing_setting() -> None:
    assert resolve_settings({})["packing"] is True
    collator, attention = make_collator(resolve_settings({}), 0)
    assert isinstance(collator, PackedCollator) and attention == PACKED_SDPA  # no flash-attn here
    collator, attention = make_collator(resolve_settings({"packing": False}), 0)
    assert isinstance(collator, SFTCollator) and attention == "sdpa"
    from selectit.errors import InputError

    with pytest.raises(InputError, match="packing"):
        resolve_settings({"packing": "yes"})


def test_flash_attention_only_with_bf16(monkeypatch) -> None:
    """On a GPU with flash-attn, packed batches take its varlen kernels, which need 16-bit inputs: with bf16
    training; fp32 training packs with per-example SDPA."""
    from selectit import training

    monkeypatch.setattr(training, "flash_attention_available", lambda: True)
    monkeypatch.setattr(training, "bf16_supported", lambda: True)
    collator, attention = make_collator(resolve_settings({"bf16": "auto"}), 0)
    assert attention == "flash_attention_2" and collator.flash_kwargs
    assert make_collator(resolve_settings({"bf16": False}), 0)[1] == PACKED_SDPA


def test_packed_and_padded_fine_tunes_log_the_same_losses(tmp_path: Path, tiny_model_dir) -> None:
    """Through the Trainer (shuffling, gradient accumulation, the loss normalised over the global batch):
    the same examples per step, the same logged losses; train_result.json records each run's padded share."""
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(_real_records(16, start=20)))
    settings = {"global_batch_size": 8, "per_device_batch_size": 4, "max_length": 256, "max_steps": 3,
                "learning_rate": 1e-3, "logging_steps": 1, "gradient_checkpointing": False, "save_strategy": "no"}
    results = {}
    for packing in (True, False):
        out = tmp_path / f"packing_{packing}"
        train(subset, tiny_model_dir, out, {**settings, "packing": packing}, seed=0)
        results[packing] = json.loads((out / RESULT_JSON).read_text())
    packed, padded = results[True], results[False]
    assert packed["packing"] is True and padded["packing"] is False
    assert packed["batches"]["padded_share"] == 0.0 and padded["batches"]["padded_share"] > 0.1
    assert packed["batches"]["tokens"] == padded["batches"]["tokens"]  # the same examples were drawn
    assert packed["batches"]["micro_batches"] == padded["batches"]["micro_batches"] == 6
    assert packed["loss_curve"]["steps"] == padded["loss_curve"]["steps"] == [1, 2, 3]
    for a, b in zip(packed["loss_curve"]["loss"], padded["loss_curve"]["loss"]):
        assert a == pytest.approx(b, rel=1e-4)
    assert packed["run_fingerprint"] != padded["run_fingerprint"]  # a change of the setting is another run
    assert packed["batches"]["attention"] == PACKED_SDPA and padded["batches"]["attention"] == "sdpa"
    # the saved model loads anywhere: its config names no attention of this package
    assert PACKED_SDPA not in (tmp_path / "packing_True" / "config.json").read_text()
