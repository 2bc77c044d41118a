"""Supervised instruction tuning of a base model on a selected subset (the last stage of SelectIT).

The subset is an Alpaca-format JSON list (``instruction``, optional ``input``, ``output``). Each record is
rendered with the LLMZoo-style conversation ``template`` (a config value, see ``DEFAULT_TEMPLATE``)::

    {system}\\n\\nHuman: {instruction}[\\n{input}]\\nAssistant: {response}<eos>

and trained with transformers' ``Trainer``. The loss covers the response tokens and the EOS only: the
prompt and the padding are labelled ``-100``. Micro-batches are padding-free by default (``packing``:
``PackedCollator`` runs a micro-batch's examples as one sequence, attention kept within each example), so
the model computes only real tokens; ``packing: false`` right-pads the rows instead (``SFTCollator``). A
record longer than ``max_length`` keeps its whole prompt and loses the end of its response (and then its
EOS); a record whose prompt alone fills ``max_length`` has nothing to learn from and is dropped (counted in
``train_result.json``).

Hyperparameters come from a settings dict; ``DEFAULT_SETTINGS`` holds the paper's values (lr 2e-5, cosine,
warmup ratio 0.03, no weight decay, 3 epochs, global batch 128, max length 4096, bf16 where the hardware
runs it). ``gradient_accumulation_steps`` is derived: global batch = per-device batch x accumulation x
world size, and a global batch that does not divide evenly is an error.

Outputs and restarts:

- checkpoints go to ``<out_dir>.checkpoints/`` (a sibling of ``out_dir``); a checkpoint counts only once
  its ``trainer_state.json`` exists (the Trainer writes it last), and a rerun resumes from the newest
  complete one (``train_result.json`` records ``resumed_from``) provided it belongs to the same run: the
  folder's ``run.json`` holds a fingerprint of subset, base model, settings, seed and world size, and
  checkpoints of any other run are deleted rather than resumed; a checkpoint of the last step is taken as
  the result as it is (the Trainer would otherwise take one step more);
- the final model and tokenizer are saved to ``out_dir`` and ``out_dir/train_result.json`` is written last
  (atomically), so a folder without it is never a finished model; the checkpoints are removed after a
  successful run unless ``keep_checkpoints`` is set.

Launching: one process runs as ``python -m selectit.training ...``; several processes, or DeepSpeed (even
with one process: it needs the process group that ``torchrun`` sets up), run under ``torchrun``
(``python -m torch.distributed.run --standalone --nproc_per_node N``); ``launch_command`` builds the
command line and the CLI relaunches itself through it when needed. Without a GPU, DeepSpeed runs on its CPU
accelerator (``DS_ACCELERATOR=cpu``) and the processes talk over gloo.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from selectit.atomic import write_text_atomic
from selectit.errors import InputError
from selectit.launch import rank as _rank
from selectit.launch import torchrun_command, under_torchrun, world_size_from_env

LOG = logging.getLogger(__name__)

IGNORE_INDEX = -100
RESULT_JSON = "train_result.json"
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE = "trainer_state.json"

DEFAULT_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

#: LLMZoo-style conversation format. ``prompt`` is formatted with ``system`` and ``instruction`` (the
#: record's instruction, plus ``input_joiner`` and its input when the input is not blank); ``response``
#: with ``response``. The EOS token is appended after the response by the tokenizer step, not here.
DEFAULT_TEMPLATE: dict[str, str] = {
    "system": DEFAULT_SYSTEM,
    "prompt": "{system}\n\nHuman: {instruction}\nAssistant:",
    "response": " {response}",
    "input_joiner": "\n",
}

#: Paper defaults (SelectIT, Liu et al. 2024, following the LLMZoo/Alpaca fine-tuning recipe).
DEFAULT_SETTINGS: dict[str, Any] = {
    "learning_rate": 2e-5,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.03,
    "weight_decay": 0.0,
    "epochs": 3,
    "max_steps": -1,  # > 0 overrides epochs (tests, smoke runs)
    "global_batch_size": 128,
    "per_device_batch_size": 4,
    "max_length": 4096,
    "bf16": "auto",  # "auto" | true | false
    "gradient_checkpointing": True,
    "optim": "adamw_torch",
    "max_grad_norm": 1.0,
    "save_strategy": "steps",  # "steps" | "epoch" | "no"
    "save_steps": 200,
    "save_total_limit": 1,
    "keep_checkpoints": False,
    "logging_steps": 10,
    "deepspeed": None,  # path to a DeepSpeed JSON config (e.g. configs/deepspeed/zero2.json) or None
    "packing": True,  # padding-free micro-batches (PackedCollator); False: right-padded rows (SFTCollator)
    "template": DEFAULT_TEMPLATE,
}

_TEMPLATE_KEYS = set(DEFAULT_TEMPLATE)
_SAVE_STRATEGIES = ("steps", "epoch", "no")


# --------------------------------------------------------------------------------------------- settings


def resolve_settings(settings: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``settings``; unknown keys and bad values raise ``InputError``.

    A partial ``template`` is merged into ``DEFAULT_TEMPLATE`` (e.g. only a different ``system``).
    """
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise InputError(f"unknown training setting(s) {unknown}; known: {sorted(DEFAULT_SETTINGS)}")
    out = copy.deepcopy(DEFAULT_SETTINGS)
    template = settings.pop("template", None)
    out.update(settings)
    if template is not None:
        if not isinstance(template, dict):
            raise InputError(f"training setting 'template' must be a mapping with keys {sorted(_TEMPLATE_KEYS)}")
        bad = sorted(set(template) - _TEMPLATE_KEYS)
        if bad:
            raise InputError(f"unknown template key(s) {bad}; known: {sorted(_TEMPLATE_KEYS)}")
        out["template"] = {**DEFAULT_TEMPLATE, **template}
    if "{instruction}" not in out["template"]["prompt"] or "{response}" not in out["template"]["response"]:
        raise InputError("template 'prompt' needs an {instruction} field and 'response' a {response} field")

    def positive_int(key: str) -> None:
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 1:
            raise InputError(f"training setting {key!r} must be a positive integer (got {out[key]!r})")

    for key in ("global_batch_size", "per_device_batch_size", "max_length", "logging_steps", "save_steps"):
        positive_int(key)
    if out["save_total_limit"] is not None:
        positive_int("save_total_limit")
    if not isinstance(out["max_steps"], int) or (out["max_steps"] < 1 and out["max_steps"] != -1):
        raise InputError(f"training setting 'max_steps' must be -1 or a positive integer (got {out['max_steps']!r})")
    if not (isinstance(out["epochs"], (int, float)) and out["epochs"] > 0):
        raise InputError(f"training setting 'epochs' must be > 0 (got {out['epochs']!r})")
    if not (isinstance(out["learning_rate"], (int, float)) and out["learning_rate"] > 0):
        raise InputError(f"training setting 'learning_rate' must be > 0 (got {out['learning_rate']!r})")
    if not (isinstance(out["warmup_ratio"], (int, float)) and 0 <= out["warmup_ratio"] < 1):
        raise InputError(f"training setting 'warmup_ratio' must be in [0, 1) (got {out['warmup_ratio']!r})")
    if out["save_strategy"] not in _SAVE_STRATEGIES:
        raise InputError(f"training setting 'save_strategy' must be one of {_SAVE_STRATEGIES}")
    if not isinstance(out["packing"], bool):
        raise InputError(f"training setting 'packing' must be true or false (got {out['packing']!r})")
    if out["bf16"] not in ("auto", True, False):
        raise InputError(f"training setting 'bf16' must be 'auto', true or false (got {out['bf16']!r})")
    if out["deepspeed"] is not None:
        path = Path(out["deepspeed"])
        if not path.is_file():
            raise InputError(f"DeepSpeed config {path} does not exist")
        try:
            json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"DeepSpeed config {path} is not valid JSON: {exc}") from None
        out["deepspeed"] = str(path)
    return out


def base_settings(training: dict[str, Any], base: str) -> dict[str, Any]:
    """One base's training settings as configured (not resolved): ``training.settings``, then the base's own
    ``settings`` over them (a key given there replaces that key whole)."""
    return {**(training.get("settings") or {}), **((training["bases"][base] or {}).get("settings") or {})}


def gradient_accumulation_steps(global_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """Accumulation steps so that per-device batch x steps x world size == global batch (else InputError)."""
    for name, value in (("global_batch_size", global_batch_size), ("per_device_batch_size", per_device_batch_size),
                        ("world_size", world_size)):
        if value < 1:
            raise InputError(f"{name} must be >= 1 (got {value})")
    per_step = per_device_batch_size * world_size
    if global_batch_size % per_step:
        raise InputError(
            f"global batch {global_batch_size} is not divisible by per-device batch {per_device_batch_size} "
            f"x {world_size} process(es) = {per_step}; change global_batch_size, per_device_batch_size or the "
            "number of processes"
        )
    return global_batch_size // per_step


def bf16_supported() -> bool:
    """Whether this machine runs bf16 natively: a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(bool(check()) for check in checks if check is not None)


def resolve_bf16(value: str | bool) -> bool:
    """``"auto"`` -> bf16 where supported; ``True`` on hardware without bf16 is an InputError."""
    if value == "auto":
        return bf16_supported()
    if value is True and not bf16_supported():
        raise InputError("bf16 training was requested but this machine has no native bf16; set bf16: auto or false")
    return bool(value)


# ----------------------------------------------------------------------------------- data and tokens


def format_example(record: dict[str, Any], template: dict[str, str] | None = None) -> tuple[str, str]:
    """(prompt_text, response_text) of one Alpaca record in the conversation ``template``.

    The input is appended to the instruction with ``input_joiner`` only when it is not blank. The EOS
    token is not part of the response text (it is appended as a token id by ``tokenize_example``).
    """
    template = {**DEFAULT_TEMPLATE, **(template or {})}
    if not isinstance(record, dict):
        raise InputError(f"a training record must be an object, got {type(record).__name__}")
    instruction, output, extra = record.get("instruction"), record.get("output"), record.get("input")
    if not isinstance(instruction, str) or not isinstance(output, str):
        raise InputError("a training record needs string 'instruction' and 'output' fields")
    if extra is not None and not isinstance(extra, str):
        raise InputError(f"a training record's 'input' must be a string, got {type(extra).__name__}")
    if extra and extra.strip():
        instruction = instruction + template["input_joiner"] + extra
    prompt = template["prompt"].format(system=template["system"], instruction=instruction)
    response = template["response"].format(response=output)
    return prompt, response


def assemble_example(prompt_ids: Sequence[int], response_ids: Sequence[int], eos_token_id: int,
                     max_length: int) -> dict[str, list[int]] | None:
    """input_ids / labels from token ids: labels are -100 on the prompt, the ids on response + EOS.

    Longer than ``max_length``: the prompt stays whole and the end of response + EOS is cut. ``None`` when
    the prompt alone leaves no room for a single response token.
    """
    prompt_ids, response_ids = list(prompt_ids), list(response_ids) + [int(eos_token_id)]
    room = max_length - len(prompt_ids)
    if room < 1:
        return None
    response_ids = response_ids[:room]
    return {
        "input_ids": prompt_ids + response_ids,
        "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids,
    }


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise InputError("the tokenizer has no EOS token; training needs one to end the responses")
    return int(tokenizer.eos_token_id)


def tokenize_example(record: dict[str, Any], tokenizer: Any, template: dict[str, str] | None = None,
                     max_length: int = 4096) -> dict[str, list[int]] | None:
    """Token ids and labels of one record (see ``assemble_example``).

    The prompt is tokenised with the tokenizer's special tokens (a BOS where the model uses one) and the
    response separately without them, so the prompt/response boundary is exact.
    """
    prompt, response = format_example(record, template)
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return assemble_example(prompt_ids, response_ids, _eos_id(tokenizer), max_length)


def load_subset(path: str | Path) -> list[dict[str, Any]]:
    """Records of an Alpaca-format JSON list; errors name the file and the record."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training subset {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"training subset {path} is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, list):
        raise InputError(f"training subset {path} must hold a JSON list of records")
    for i, record in enumerate(data):
        try:
            format_example(record)
        except InputError as exc:
            raise InputError(f"{path}, record {i}: {exc}") from None
    return data


@dataclass
class TokenizedSubset:
    """Tokenised training examples and their counts."""

    examples: list[dict[str, list[int]]]
    n_records: int
    n_dropped_prompt_too_long: int
    n_truncated: int

    @property
    def n_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def n_response_tokens(self) -> int:
        return sum(sum(1 for label in e["labels"] if label != IGNORE_INDEX) for e in self.examples)


def tokenize_subset(records: Sequence[dict[str, Any]], tokenizer: Any, template: dict[str, str],
                    max_length: int) -> TokenizedSubset:
    """Tokenise all records (batched; same result as ``tokenize_example`` on each)."""
    pairs = [format_example(r, template) for r in records]
    eos = _eos_id(tokenizer)
    examples: list[dict[str, list[int]]] = []
    dropped = truncated = 0
    if pairs:
        prompt_ids = tokenizer([p for p, _ in pairs], add_special_tokens=True)["input_ids"]
        response_ids = tokenizer([r for _, r in pairs], add_special_tokens=False)["input_ids"]
        for p_ids, r_ids in zip(prompt_ids, response_ids):
            example = assemble_example(p_ids, r_ids, eos, max_length)
            if example is None:
                dropped += 1
                continue
            truncated += len(p_ids) + len(r_ids) + 1 > max_length
            examples.append(example)
    return TokenizedSubset(examples, len(records), dropped, truncated)


class SFTDataset:
    """Map-style dataset over tokenised examples (torch ``Dataset`` protocol)."""

    def __init__(self, examples: Sequence[dict[str, list[int]]]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


@dataclass
class SFTCollator:
    """Right-pads a batch: input_ids with ``pad_token_id``, labels with -100, attention_mask 0 on padding."""

    pad_token_id: int

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            input_ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(f["labels"], dtype=torch.long)
            attention[row, :n] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


class PackedCollator:
    """Padding-free micro-batches: the examples of a micro-batch are concatenated into one row (transformers'
    ``DataCollatorWithFlattening``), with ``position_ids`` that restart at 0 at every example and no attention
    mask. From those position ids transformers builds a block-diagonal causal mask (SDPA, eager, flex
    attention) or passes the sequence boundaries to flash-attention's variable-length kernels
    (``flash_attention_2``: ``flash_kwargs`` adds ``cu_seq_lens``), and ``packed_sdpa_attention`` cuts the row
    into its examples, so no token attends across examples.

    The micro-batch holds the same examples as the padded collator's and the same labels: the first label of
    each example, which the flattening sets to -100 so that the last token of one example is not trained to
    predict the first of the next, is a prompt token, already -100 (``assemble_example``). The loss and its
    normalisation (the count of labelled tokens) are therefore those of the padded batch.
    """

    def __init__(self, flash_kwargs: bool = False) -> None:
        from transformers import DataCollatorWithFlattening

        self.flash_kwargs = flash_kwargs
        self._inner = DataCollatorWithFlattening(return_flash_attn_kwargs=flash_kwargs, return_tensors="pt")

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        for f in features:
            if f["labels"] and f["labels"][0] != IGNORE_INDEX:
                raise ValueError("a packed example must start with a prompt token (label -100); see assemble_example")
        return self._inner([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])


class BatchCounter:
    """Counts what the model's forward passes cost: positions it runs over against the real (non-padding)
    tokens among them (``attention_mask`` ones; every position of a packed batch); ``padded_share`` =
    1 - tokens / positions. ``attach`` hooks it to a model, so it counts the micro-batches that ran, not
    those a data loader fetched ahead."""

    def __init__(self) -> None:
        self.micro_batches = self.positions = self.tokens = 0

    def count(self, batch: dict[str, Any]) -> None:
        ids, mask = batch["input_ids"], batch.get("attention_mask")
        self.micro_batches += 1
        self.positions += int(ids.numel())
        self.tokens += int(mask.sum()) if mask is not None else int(ids.numel())

    def attach(self, model: Any) -> Any:
        """Count every forward pass of ``model`` (its top-level module); returns the hook's handle."""
        return model.register_forward_pre_hook(lambda module, args, kwargs: self.count(kwargs), with_kwargs=True)

    def summary(self) -> dict[str, Any]:
        return {"micro_batches": self.micro_batches, "positions": self.positions, "tokens": self.tokens,
                "padded_share": 1.0 - self.tokens / self.positions if self.positions else None}


#: The attention of packed rows where flash-attn is not there (CPU): ``packed_sdpa_attention``.
PACKED_SDPA = "selectit_packed_sdpa"


def packed_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                          position_ids: Any = None, sliding_window: int | None = None, **kwargs: Any):
    """Attention over a packed row, one example at a time: the row is cut where its position ids restart at 0 and
    transformers' own SDPA attention runs on each example with a plain causal mask (a banded one where a
    sliding-window layer's window is shorter than the example). The same numbers as one SDPA over the row with
    the block-diagonal mask, without computing the (sum of lengths)^2 scores that mask throws away: the cost is
    that of the examples alone, as flash-attention's variable-length kernels have it on a GPU."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if position_ids is None or query.shape[0] != 1:
        raise ValueError("packed attention needs one packed row and its position ids (PackedCollator)")
    positions = position_ids.reshape(-1)
    bounds = torch.nonzero(positions == 0).flatten().tolist() + [query.shape[2]]
    if bounds[0] != 0:
        raise ValueError("a packed row must start at position 0")
    outputs = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        mask, n = None, end - start
        if sliding_window is not None and n > sliding_window:
            i = torch.arange(n, device=query.device)
            mask = ((i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - sliding_window))[None, None]
        out, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end],
                                        value[:, :, start:end], mask, **kwargs)
        outputs.append(out)  # (1, n, heads, head_dim)
    return torch.cat(outputs, dim=1), None


def register_packed_sdpa() -> str:
    """Register ``packed_sdpa_attention`` with transformers (no mask function: the model builds no mask for it)."""
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_SDPA, packed_sdpa_attention)
    return PACKED_SDPA


def flash_attention_available() -> bool:
    """A CUDA GPU and the ``flash_attn`` package: packed batches then run flash-attention's varlen kernels."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def make_collator(settings: dict[str, Any], pad_token_id: int) -> tuple[Any, str]:
    """(collator, attention implementation) of resolved ``settings``: packed with flash-attention 2 where it
    runs (a GPU, the flash_attn package, and bf16 training: its kernels take no fp32), packed with SDPA one
    example at a time elsewhere (``packed_sdpa_attention``), or right-padded with SDPA (``packing: false``)."""
    if not settings["packing"]:
        return SFTCollator(pad_token_id), "sdpa"
    flash = flash_attention_available() and resolve_bf16(settings["bf16"])
    return PackedCollator(flash_kwargs=flash), "flash_attention_2" if flash else register_packed_sdpa()


# -------------------------------------------------------------------------------------- checkpoints


def checkpoint_dir(out_dir: str | Path) -> Path:
    """``<out_dir>.checkpoints``: where the Trainer's checkpoints of this run go."""
    out = Path(out_dir)
    return out.with_name(out.name + ".checkpoints")


def _checkpoint_step(path: Path) -> int | None:
    if not path.is_dir() or not path.name.startswith(CHECKPOINT_PREFIX):
        return None
    suffix = path.name[len(CHECKPOINT_PREFIX):]
    return int(suffix) if suffix.isdigit() else None


def find_last_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """Newest complete checkpoint (one with ``trainer_state.json``, which the Trainer writes last)."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    complete = [(step, p) for p in folder.iterdir()
                if (step := _checkpoint_step(p)) is not None and (p / TRAINER_STATE).is_file()]
    return max(complete)[1] if complete else None


def remove_incomplete_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Delete checkpoint folders a killed run left half-written; returns them."""
    folder = Path(ckpt_dir)
    removed = []
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if _checkpoint_step(p) is not None and not (p / TRAINER_STATE).is_file():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


RUN_JSON = "run.json"
#: Settings that change where or how often things are written, not the trained weights.
_NON_RESULT_SETTINGS = ("save_strategy", "save_steps", "save_total_limit", "keep_checkpoints", "logging_steps")


def run_fingerprint(subset_path: str | Path, base_model_dir: str | Path, settings: dict[str, Any], seed: int,
                    world_size: int) -> str:
    """Hash of what determines the trained weights: subset bytes, base model, settings, seed, world size.

    Checkpoints are resumed only under the same fingerprint, so a rerun with a changed subset or settings
    (Snakemake deletes ``train_result.json`` but knows nothing of the checkpoints) starts afresh.
    """
    base = Path(base_model_dir)
    info = base / "model.json"
    base_id = info.read_text() if info.is_file() else str(base.resolve())
    config = base / "config.json"
    payload = {
        "subset_sha256": _sha256(Path(subset_path)),
        "base": base_id,
        "base_config": config.read_text() if config.is_file() else None,
        "settings": {k: v for k, v in settings.items() if k not in _NON_RESULT_SETTINGS},
        "seed": seed,
        "world_size": world_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def prepare_checkpoint_dir(ckpt_dir: str | Path, fingerprint: str) -> list[Path]:
    """Make ``ckpt_dir`` hold only resumable checkpoints of this run; returns what was removed.

    Checkpoints of another run (different ``run.json`` fingerprint, or none) and half-written ones go.
    """
    folder = Path(ckpt_dir)
    removed: list[Path] = []
    run_json = folder / RUN_JSON
    if folder.is_dir():
        recorded = json.loads(run_json.read_text()).get("fingerprint") if run_json.is_file() else None
        if recorded != fingerprint:
            for p in sorted(folder.iterdir()):
                if _checkpoint_step(p) is not None:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        removed += remove_incomplete_checkpoints(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(run_json, {"fingerprint": fingerprint})
    return removed


# ---------------------------------------------------------------------------------------- training


def build_training_arguments(settings: dict[str, Any], ckpt_dir: str | Path, seed: int,
                             world_size: int | None = None):
    """``TrainingArguments`` for resolved ``settings`` (grad accumulation derived from the global batch)."""
    import torch
    from transformers import TrainingArguments

    world_size = world_size or world_size_from_env()
    accum = gradient_accumulation_steps(settings["global_batch_size"], settings["per_device_batch_size"], world_size)
    kwargs: dict[str, Any] = {}
    if not torch.cuda.is_available():
        kwargs["use_cpu"] = True
        if world_size > 1:
            kwargs["ddp_backend"] = "gloo"
    return TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=settings["per_device_batch_size"],
        gradient_accumulation_steps=accum,
        num_train_epochs=float(settings["epochs"]),
        max_steps=settings["max_steps"],
        learning_rate=float(settings["learning_rate"]),
        lr_scheduler_type=settings["lr_scheduler"],
        warmup_steps=float(settings["warmup_ratio"]),  # a float in [0, 1) is a ratio of the total steps
        weight_decay=float(settings["weight_decay"]),
        optim=settings["optim"],
        max_grad_norm=float(settings["max_grad_norm"]),
        bf16=resolve_bf16(settings["bf16"]),
        activation_checkpointing=bool(settings["gradient_checkpointing"]),
        activation_checkpointing_kwargs={"use_reentrant": False} if settings["gradient_checkpointing"] else None,
        save_strategy=settings["save_strategy"],
        save_steps=settings["save_steps"],
        save_total_limit=settings["save_total_limit"],
        logging_strategy="steps",
        logging_steps=settings["logging_steps"],
        logging_first_step=True,
        seed=seed,
        data_seed=seed,
        deepspeed=settings["deepspeed"],
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
        **kwargs,
    )


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that determine the training result."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "deepspeed", "tokenizers", "safetensors"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _loss_curve(log_history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    points = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    finite = [loss for _, loss in points if math.isfinite(loss)]
    return {
        "steps": [s for s, _ in points],
        "loss": [loss for _, loss in points],
        "first": points[0][1] if points else None,
        "last": points[-1][1] if points else None,
        "min": min(finite) if finite else None,
        "all_finite": len(finite) == len(points),
    }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def train(subset_path: str | Path, base_model_dir: str | Path, out_dir: str | Path, settings: dict[str, Any],
          seed: int, callbacks: Sequence[Any] | None = None) -> dict[str, Any]:
    """Fine-tune ``base_model_dir`` on the subset; write the model to ``out_dir`` and return the summary.

    The summary is also ``out_dir/train_result.json`` (written last): counts (``n_examples``, ``n_tokens``
    = tokens of one epoch, ``n_response_tokens`` = the trained ones), ``loss_curve`` (logged steps and
    losses, first/last/min), ``resumed_from``, ``wall_time_s`` (this process), seed, resolved settings,
    ``run_fingerprint`` and package versions. The weights are saved in the dtype training held them in:
    float32 (bf16 autocast) without DeepSpeed, bfloat16 with DeepSpeed bf16. ``callbacks`` are extra
    ``TrainerCallback`` objects (monitoring, tests). Run under torchrun when several processes or
    DeepSpeed are used (see ``launch_command``).
    """
    start = time.time()
    settings = resolve_settings(settings)
    world_size = world_size_from_env()
    if settings["deepspeed"] and "LOCAL_RANK" not in os.environ:
        raise InputError("DeepSpeed training must be launched through torchrun (see launch_command, or pass "
                         "--nproc-per-node to the CLI, which relaunches itself)")

    import torch

    if settings["deepspeed"] and not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

    subset_path, base, out = Path(subset_path), Path(base_model_dir), Path(out_dir)
    if not base.is_dir():
        raise InputError(f"base model folder {base} does not exist")
    records = load_subset(subset_path)
    tokenizer = AutoTokenizer.from_pretrained(base, trust_remote_code=False)
    data = tokenize_subset(records, tokenizer, settings["template"], settings["max_length"])
    if not data.examples:
        raise InputError(f"training subset {subset_path} has no usable record ({data.n_records} records, "
                         f"{data.n_dropped_prompt_too_long} with a prompt of max_length or more)")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else _eos_id(tokenizer)

    ckpt_dir = checkpoint_dir(out)
    args = build_training_arguments(settings, ckpt_dir, seed, world_size)  # sets up the process group
    fingerprint = run_fingerprint(subset_path, base, settings, seed, world_size)
    with args.main_process_first(local=False, desc="checkpoint check"):
        if _rank() == 0:  # runs first; the other ranks then see the cleaned folder
            (out / RESULT_JSON).unlink(missing_ok=True)  # an old marker must not vouch for new weights
            for p in prepare_checkpoint_dir(ckpt_dir, fingerprint):
                LOG.warning("removed checkpoint %s (incomplete, or of another run)", p)
        resume = find_last_checkpoint(ckpt_dir)
    resume_step = _checkpoint_step(resume) if resume is not None else None
    if resume is not None:
        LOG.warning("resuming from checkpoint %s", resume)

    resume_state = json.loads((resume / TRAINER_STATE).read_text()) if resume is not None else {}
    if resume_state and 0 < resume_state.get("max_steps", 0) <= resume_state.get("global_step", 0):
        # The run got to its last step before it was stopped. Trainer would take one step more when
        # resumed from there, so the checkpoint's weights are the result.
        LOG.warning("checkpoint %s is at the last step; its weights are the result", resume)
        if _rank() == 0:
            model = AutoModelForCausalLM.from_pretrained(resume, dtype="auto", trust_remote_code=False)
            model.config.use_cache = True
            model.save_pretrained(out, safe_serialization=True)
            tokenizer.save_pretrained(out)
        log_history = resume_state.get("log_history", [])
        global_step, epoch = int(resume_state["global_step"]), float(resume_state.get("epoch") or 0.0)
        losses = [e["loss"] for e in log_history if "loss" in e]
        train_loss = float(sum(losses) / len(losses)) if losses else None
        batches = None  # nothing was trained in this process
    else:
        collator, attention = make_collator(settings, pad_id)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=False,
                                                     attn_implementation=attention)
        model.config.use_cache = False  # a cache would hide packed sequences from the mask (masking_utils)
        counter = BatchCounter()
        counter.attach(model)
        trainer = Trainer(model=model, args=args, train_dataset=SFTDataset(data.examples),
                          data_collator=collator, processing_class=tokenizer,
                          callbacks=list(callbacks or []))
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        trainer.model.config.use_cache = True  # checkpointing switched it off; inference wants it back
        trainer.save_model(str(out))
        trainer.accelerator.wait_for_everyone()
        log_history, global_step = trainer.state.log_history, int(trainer.state.global_step)
        epoch, train_loss = float(trainer.state.epoch or 0.0), float(result.training_loss)
        batches = {**counter.summary(), "attention": attention}

    summary = {
        "out_dir": str(out),
        "base_model_dir": str(base),
        "subset_path": str(subset_path),
        "subset_sha256": _sha256(subset_path),
        "seed": seed,
        "settings": settings,
        "run_fingerprint": fingerprint,
        "world_size": world_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "bf16": bool(args.bf16),
        "deepspeed": settings["deepspeed"],
        "n_records": data.n_records,
        "n_examples": len(data.examples),
        "n_dropped_prompt_too_long": data.n_dropped_prompt_too_long,
        "n_truncated": data.n_truncated,
        "n_tokens": data.n_tokens,
        "n_response_tokens": data.n_response_tokens,
        "global_step": global_step,
        "epochs_done": epoch,
        "train_loss": train_loss,  # mean logged loss of this process's steps (Trainer's training_loss)
        "loss_curve": _loss_curve(log_history),
        "resumed_from": str(resume) if resume else None,
        "resumed_from_step": resume_step,
        "packing": settings["packing"],
        # this process's micro-batches (rank 0; after a resume only the steps it ran): positions computed,
        # real tokens among them, padded share; None when a checkpoint of the last step was taken as it is
        "batches": batches,
        "wall_time_s": round(time.time() - start, 3),  # this process only (not the killed run before)
        "versions": package_versions(),
    }
    if _rank() == 0:
        if not settings["keep_checkpoints"]:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        _write_json_atomic(out / RESULT_JSON, summary)
    return summary


# ------------------------------------------------------------------------------------------- launch


def cli_args(subset: str | Path, base: str | Path, out: str | Path, settings_json: str | None,
             seed: int) -> list[str]:
    """The ``selectit.training`` arguments of one run (to append to ``launch_command``)."""
    args = ["--subset", str(subset), "--base", str(base), "--out", str(out), "--seed", str(seed)]
    if settings_json is not None:
        args += ["--settings-json", settings_json]
    return args


def launch_command(settings: dict[str, Any], n_procs: int, train_args: Sequence[str] = ()) -> list[str]:
    """Command line that runs ``python -m selectit.training`` with ``n_procs`` processes.

    torchrun (as ``python -m torch.distributed.run --standalone``, so the venv's interpreter is used and a
    free port is picked) when ``n_procs > 1`` or DeepSpeed is configured; a plain ``python`` otherwise.
    Checks the global batch divides over ``n_procs`` before anything starts.
    """
    settings = resolve_settings(settings)
    if isinstance(n_procs, bool) or not isinstance(n_procs, int) or n_procs < 1:
        raise InputError(f"the number of processes must be a positive integer (got {n_procs!r})")
    gradient_accumulation_steps(settings["global_batch_size"], settings["per_device_batch_size"], n_procs)
    if n_procs > 1 or settings["deepspeed"]:
        return torchrun_command(n_procs, "selectit.training", train_args)
    return [sys.executable, "-m", "selectit.training", *train_args]


def read_settings_arg(value: str | None) -> dict[str, Any]:
    """``--settings-json``: a path to a JSON file or an inline JSON object; None -> {} (the defaults)."""
    if value is None:
        return {}
    text = value if value.lstrip().startswith("{") else None
    if text is None:
        path = Path(value)
        if not path.is_file():
            raise InputError(f"settings file {path} does not exist (give a path or an inline JSON object)")
        text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"--settings-json is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("--settings-json must hold a JSON object")
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``python -m selectit.training`` and ``python -m selectit train``."""
    parser.add_argument("--subset", required=True, help="Alpaca-format JSON list to train on")
    parser.add_argument("--base", required=True, help="base model folder (HF format)")
    parser.add_argument("--out", required=True, help="output model folder; train_result.json is written last")
    parser.add_argument("--settings-json", default=None,
                        help="training settings: a JSON file or an inline JSON object (defaults: paper values)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--nproc-per-node", type=int, default=1,
                        help="processes to run; >1 or a DeepSpeed config relaunches under torchrun (default 1)")


def run_cli(args: argparse.Namespace) -> int:
    """Train from parsed CLI arguments, relaunching under torchrun when needed; returns the exit status."""
    settings = read_settings_arg(args.settings_json)
    resolved = resolve_settings(settings)
    if not under_torchrun() and (args.nproc_per_node > 1 or resolved["deepspeed"]):
        cmd = launch_command(settings, args.nproc_per_node,
                             cli_args(args.subset, args.base, args.out, args.settings_json, args.seed)
                             + ["--nproc-per-node", str(args.nproc_per_node)])
        LOG.warning("launching: %s", " ".join(cmd))
        return subprocess.run(cmd, check=False).returncode
    summary = train(args.subset, args.base, args.out, settings, args.seed)
    if _rank() == 0:
        print(json.dumps({k: summary[k] for k in ("out_dir", "n_examples", "global_step", "train_loss",
                                                  "resumed_from", "wall_time_s")}))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``train`` subcommand to an argparse subparsers object (sets ``func``)."""
    parser = subparsers.add_parser("train", help="fine-tune a base model on a selected subset",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(func=run_cli)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selectit.training", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_cli(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
