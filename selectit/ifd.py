"""Instruction-Following Difficulty (IFD), the Q2Q / Cherry LLM baseline of Table 1 (Li et al. 2023,
"From Quantity to Quality").

    IFD(x) = L(response | instruction) / L(response)

L is a rater model's mean cross-entropy over the response tokens: once after the instruction, and once
with the response "alone". IFD < 1: the instruction makes the response easier to predict; the Q2Q selection
keeps the highest IFD among those (see ``selectit.selection``). Two variants (``selection.ifd.variant``)
differ in the prompt, in what the "alone" loss is conditioned on, and in truncation:

``cherry`` replays the released Cherry_LLM computation (tianyi-lab/Cherry_LLM, ``cherry_seletion/
data_analysis.py --mod cherry --prompt alpaca`` then ``data_by_IFD.py``; see ``encode_cherry``):

- conditioned: the Stanford Alpaca prompt (``CHERRY_PROMPT_NO_INPUT``, or ``CHERRY_PROMPT_INPUT`` for a
  record with a non-empty ``input``) followed directly by the response, tokenised as one text with the
  tokenizer's special tokens (a BOS for LLaMA) and truncated to ``max_length`` tokens (Cherry's scripts:
  512). The scored tokens are those from position len(tokenize(prompt)) on.
- response alone: ``"### Response:" + response``, with the special tokens, truncated to ``max_length -
  len(tokenize(prompt)) - 2``; the scored tokens are those after len(tokenize("### Response:")). So the
  "alone" loss is conditioned on BOS and the answer marker, not on BOS only.
- a record is left undefined (IFD NaN, ranked after every other record) where Cherry skips it: the room
  for the "alone" text is 4 tokens or less, a scored part is empty (Cherry skips an empty one; a
  negative length, which Cherry turns into a NaN mean, is treated the same), or prompt tokens + scored
  "alone" tokens exceed ``max_length``. Cherry also drops IFD > 1; here those rows keep their IFD and rank
  after the IFD < 1 rows (the selection is size-matched, ``selectit.selection.ifd_order``). Where this
  deliberately differs from Cherry: a record with IFD exactly 1 ranks after those below 1 (Cherry keeps it
  with the best); ties go to the earlier record (Cherry: the later); the number kept is int(N *
  proportion) of all N records (Cherry: ``sample_rate`` of the records left after dropping); the rater's own
  tokenizer serves both steps (Cherry's second step hard-codes LLaMA-1's, whose vocabulary LLaMA-2 shares);
  losses are computed batched with left padding (equal to Cherry's one-at-a-time loss within float error)
  in ``rating.dtype`` (Cherry loads the model in fp32); the model is the rater ``selection.ifd.model`` (Cherry
  first fine-tunes its base briefly on a clustered sample, its "pre-experienced" model).
- the record's raw Alpaca ``instruction`` and ``input`` fields are used (``with_alpaca_fields``); our
  sample table joins them into one instruction. ShareGPT records have no input: the no-input prompt.

``simple`` (the schema default, this pipeline's own earlier choice) is described below.

Token policy of ``simple`` (``encode_pair``): the pieces are tokenised without special tokens and the response's ids end
both sequences, so both losses are over exactly the same response tokens. Both sequences start with the
same start token (``start_token``): the tokenizer's BOS, else its EOS (the document separator of GPT-2-style
models), whether or not the tokenizer adds it by itself, so that the first response token is predicted from a start in
the response-alone sequence too:

- conditioned: start + ``IFD_PROMPT`` head + instruction + tail + response;
- response alone: start + response.

A tokenizer with no BOS and no EOS has no start token: then the first response token has no context in the
response-alone sequence and is left out of both losses.

Truncation: a conditioned sequence longer than ``max_length`` loses the tail of its response (kept: at least
half of the room the prompt's fixed parts leave, or the whole response if shorter); if the instruction is
then still too long, the middle of the instruction is cut. Such rows are flagged ``truncated`` and counted.

The losses come from an engine's ``losses``; the HF engine's (``selectit.engines.hf_rater.mean_response_losses``)
batches with the rater's length-sorted token-budget plan (``selectit.batching.plan_batches``); sequences are
left padded, so the scored response tokens are the last ones of every row and only their logits are computed
(``logits_to_keep``); the cross-entropy is taken in float32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from selectit.atomic import write_parquet_atomic
from selectit.batching import RatingStats
from selectit.data import load_dataset_table, load_shard, read_hf_dataset, read_records
from selectit.engines import open_engine
from selectit.engines.base import Engine
from selectit.engines.hf import HFEngine
from selectit.errors import InputError
from selectit.host import prepare_cpu_threads
from selectit.models import read_model_info
from selectit.prompts import cut_middle
from selectit.sample_shards import merge_sample_shards, shard_metadata

# The conditioned text: "Instruction:\n{instruction}\n\nResponse:\n{response}" (our own simple format).
IFD_PROMPT_HEAD = "Instruction:\n"
IFD_PROMPT_TAIL = "\n\nResponse:\n"
IFD_PROMPT = IFD_PROMPT_HEAD + "{instruction}" + IFD_PROMPT_TAIL
IFD_PROMPT_SHA = hashlib.sha256(IFD_PROMPT.encode()).hexdigest()[:12]  # a job param: editing the format reruns

VARIANTS = ("simple", "cherry")

# Cherry_LLM's prompts: the Stanford Alpaca templates, and its answer marker for the response-alone text.
CHERRY_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
CHERRY_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)
CHERRY_ANSWER_MARKER = "### Response:"
CHERRY_MIN_ALONE_ROOM = 4  # Cherry computes an IFD only when max_length - prompt tokens - 2 exceeds this
CHERRY_PROMPT = CHERRY_PROMPT_INPUT + "\n" + CHERRY_PROMPT_NO_INPUT + "\n" + CHERRY_ANSWER_MARKER


def variant_prompt(variant: str) -> str:
    """The prompt text(s) a variant uses (recorded in the shard metadata; the merge refuses a mixture)."""
    if variant not in VARIANTS:
        raise InputError(f"selection.ifd.variant must be one of {VARIANTS}, got {variant!r}")
    return IFD_PROMPT if variant == "simple" else CHERRY_PROMPT

IFD_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("loss_conditioned", pa.float64()),
    ("loss_response", pa.float64()),
    ("ifd", pa.float64()),
    ("n_response_tokens", pa.int32()),  # response tokens scored in both losses
    ("truncated", pa.bool_()),
])


@dataclass
class IFDPair:
    conditioned: list[int]  # prompt + response token ids
    response_only: list[int]  # [BOS] + response ids, or the response ids alone (cherry: BOS + marker + response)
    n_scored: int  # the last n_scored tokens of the conditioned sequence are scored
    truncated: bool
    n_scored_alone: int | None = None  # the last ones of response_only that are scored; None: n_scored
    undefined: str | None = None  # cherry: why Cherry_LLM computes no IFD for this record (then NaN)

    @property
    def n_alone(self) -> int:
        return self.n_scored if self.n_scored_alone is None else self.n_scored_alone


def start_token(tokenizer: Any) -> int | None:
    """The token both IFD sequences start with: the tokenizer's BOS, else its EOS; None if it has neither."""
    if tokenizer.bos_token_id is not None:
        return int(tokenizer.bos_token_id)
    return None if tokenizer.eos_token_id is None else int(tokenizer.eos_token_id)


def encode_pair(tokenizer: Any, instruction: str, response: str, max_length: int, start: int | None) -> IFDPair:
    """Token ids of the conditioned and the response-only sequence of one sample (see the module doc).
    ``start``: the start token id (``start_token(tokenizer)``), or None for none."""
    start_ids = [] if start is None else [start]
    head = start_ids + tokenizer(IFD_PROMPT_HEAD, add_special_tokens=False)["input_ids"]
    instr = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    tail = tokenizer(IFD_PROMPT_TAIL, add_special_tokens=False)["input_ids"]
    resp = tokenizer(response, add_special_tokens=False)["input_ids"]
    fixed = len(head) + len(tail)
    truncated = False
    if fixed + len(instr) + len(resp) > max_length:
        truncated = True
        room = max_length - fixed  # for the instruction and the response
        if room < 2:
            raise InputError(f"selection.ifd.max_length={max_length} is too small for the IFD prompt "
                             f"({fixed} tokens) and a response")
        resp = resp[:max(room - len(instr), min(len(resp), room // 2))]
        if len(instr) > room - len(resp):
            instr = cut_middle(instr, room - len(resp))
    n_scored = len(resp) if start_ids else len(resp) - 1
    return IFDPair(head + instr + tail + resp, start_ids + resp, n_scored, truncated)


def cherry_prompt(instruction: str, input_text: str = "") -> str:
    """Cherry_LLM's (Stanford Alpaca's) prompt of a record; the input template iff ``input_text != ""``."""
    if input_text != "":
        return CHERRY_PROMPT_INPUT.format_map({"instruction": instruction, "input": input_text})
    return CHERRY_PROMPT_NO_INPUT.format_map({"instruction": instruction})


def encode_cherry(tokenizer: Any, instruction: str, input_text: str, response: str, max_length: int) -> IFDPair:
    """Token ids and scored counts of one record as Cherry_LLM computes them (see the module doc).

    Every text is tokenised with the tokenizer's special tokens, truncated by the tokenizer itself where
    Cherry truncates; the scored part of each text starts after the tokens of the text before the
    response, tokenised on its own and not truncated (Cherry's ``len(tokenizer.encode(text[:start]))``)."""
    def ids(text: str, limit: int | None = None) -> list[int]:
        if limit is None:
            return list(tokenizer(text)["input_ids"])
        return list(tokenizer(text, truncation=True, max_length=limit)["input_ids"])

    prompt = cherry_prompt(instruction, input_text)
    whole, alone_text = prompt + response, CHERRY_ANSWER_MARKER + response
    n_prompt = len(ids(prompt, max_length))
    room = max_length - n_prompt - 2
    if room <= CHERRY_MIN_ALONE_ROOM:
        return IFDPair([], [], 0, True, 0, f"the prompt leaves {room} tokens (<= {CHERRY_MIN_ALONE_ROOM}) "
                                              "for the response-alone text")
    conditioned, alone = ids(whole, max_length), ids(alone_text, room)
    n_cond = len(conditioned) - len(ids(prompt))
    n_alone = len(alone) - len(ids(CHERRY_ANSWER_MARKER))
    truncated = len(conditioned) < len(ids(whole)) or len(alone) < len(ids(alone_text))
    undefined = None
    if n_cond <= 0 or n_alone <= 0:
        undefined = f"no scored tokens (conditioned {n_cond}, alone {n_alone})"
    elif n_prompt + n_alone > max_length:
        undefined = f"prompt ({n_prompt}) + response-alone ({n_alone}) tokens exceed max_length {max_length}"
    return IFDPair(conditioned, alone, max(n_cond, 0), truncated, max(n_alone, 0), undefined)


def with_alpaca_fields(spec: dict[str, Any], shard: pd.DataFrame) -> pd.DataFrame:
    """``shard`` (id, instruction, response) with the records' raw Alpaca ``instruction`` and ``input``
    fields, which the cherry variant's prompt needs apart (the sample table joins them). The records are
    found through the sample table's ``index`` (position in the source). ShareGPT data: input "".
    (A data-layer column ``input`` would make this second read unnecessary.)"""
    out = shard.copy()
    table, report = load_dataset_table(spec)
    if report["format"] != "alpaca":
        out["input"] = ""
        return out
    records = (read_records(spec["path"]) if spec.get("path")
               else read_hf_dataset(spec["hf_name"], spec.get("revision"), spec.get("split", "train")))
    position = dict(zip(table["id"], table["index"]))

    def raw(rec: dict[str, Any], key: str) -> str:
        value = rec.get(key)
        return "" if value is None else value if isinstance(value, str) else str(value)

    out["instruction"] = [raw(records[position[i]], "instruction") for i in out["id"]]
    out["input"] = [raw(records[position[i]], "input") for i in out["id"]]
    return out


def load_ifd_shard(spec: dict[str, Any], shard: str, variant: str) -> pd.DataFrame:
    """The rows of one shard as the variant's IFD reads them (cherry: with the raw Alpaca fields)."""
    rows = load_shard(spec, shard)
    return with_alpaca_fields(spec, rows) if variant_prompt(variant) == CHERRY_PROMPT else rows


def ifd_shard(shard: pd.DataFrame, model: Any, tokenizer: Any, max_length: int, token_budget: int = 8192,
              model_name: str = "model", variant: str = "simple") -> tuple[pa.Table, dict[str, Any]]:
    """IFD of every sample of a shard; rows keep the shard's order. ``model``: a loaded HF model, or any
    ``selectit.engines.base.Engine`` (``tokenizer``: its tokenizer). ``variant`` ``cherry`` reads the raw
    Alpaca fields ``instruction`` and ``input`` (``with_alpaca_fields``; no ``input`` column: input "")
    and leaves the records Cherry_LLM computes no IFD for at NaN."""
    variant_prompt(variant)  # validates the name
    ids = shard["id"].tolist()
    start = start_token(tokenizer) if variant == "simple" else None
    if variant == "simple":
        pairs = [encode_pair(tokenizer, i, r, max_length, start)
                 for i, r in zip(shard["instruction"], shard["response"])]
        for sid, pair in zip(ids, pairs):
            if pair.n_scored < 1:
                raise InputError(f"sample {sid!r}: the response has no token to score ({len(pair.response_only)} "
                                 "tokens, and the tokenizer has no start token); IFD is undefined for it")
    else:
        inputs = shard["input"] if "input" in shard else [""] * len(shard)
        pairs = [encode_cherry(tokenizer, i, x, r, max_length)
                 for i, x, r in zip(shard["instruction"], inputs, shard["response"])]
    defined = [k for k, p in enumerate(pairs) if p.undefined is None]
    stats = RatingStats()
    seqs = [pairs[k].conditioned for k in defined] + [pairs[k].response_only for k in defined]
    n_scored = [pairs[k].n_scored for k in defined] + [pairs[k].n_alone for k in defined]
    engine = model if isinstance(model, Engine) else HFEngine(model, tokenizer, model_name)
    losses = engine.losses(seqs, n_scored, token_budget=token_budget, stats=stats)
    conditioned, alone = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
    conditioned[defined], alone[defined] = losses[:len(defined)], losses[len(defined):]
    with np.errstate(invalid="ignore", divide="ignore"):
        ifd = conditioned / alone
    for k in defined:
        if not (np.isfinite(conditioned[k]) and np.isfinite(alone[k]) and np.isfinite(ifd[k])):
            raise InputError(f"model {model_name!r}: NaN/inf loss for sample {ids[k]!r} (conditioned "
                             f"{conditioned[k]}, response alone {alone[k]}); try rating.dtype fp32 or check the model")
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "loss_conditioned": pa.array(conditioned, pa.float64()),
        "loss_response": pa.array(alone, pa.float64()),
        "ifd": pa.array(ifd, pa.float64()),
        "n_response_tokens": pa.array([p.n_scored for p in pairs], pa.int32()),
        "truncated": pa.array([p.truncated for p in pairs], pa.bool_()),
    }, schema=IFD_SCHEMA)
    out = stats.as_dict()
    out["variant"] = variant
    out["truncated_rows"] = int(sum(p.truncated for p in pairs))
    out["ifd_at_least_1"] = int((ifd >= 1).sum())
    undefined = [(ids[k], p.undefined) for k, p in enumerate(pairs) if p.undefined is not None]
    out["ifd_undefined"] = len(undefined)
    out["ifd_undefined_examples"] = dict(undefined[:5])
    out["start_token"] = start
    return table, out


def ifd_shard_file(model_dir: str | Path, shard: pd.DataFrame, max_length: int, out_path: str | Path,
                   dtype: str | None = "auto", token_budget: int = 8192, threads: int | None = None,
                   gpus: int = 1, variant: str = "simple", engine: str = "hf") -> dict[str, Any]:
    """IFD of one shard with one prepared model run by ``engine``, written atomically with the model and settings
    as metadata. For ``cherry`` the shard needs the raw Alpaca fields (``with_alpaca_fields``)."""
    cpu = prepare_cpu_threads(threads)  # before torch loads: OpenMP reads its settings once

    prompt = variant_prompt(variant)
    info = read_model_info(model_dir)
    with open_engine(engine, model_dir, dtype=dtype, gpus=gpus, threads=cpu["threads"], model_name=info["name"],
                     max_model_len=max_length + 1) as runner:
        table, stats = ifd_shard(shard, runner, runner.tokenizer, max_length, token_budget, info["name"], variant)
        described = runner.describe()
    meta = {"model": info["name"], "model_fingerprint": info["fingerprint"], "max_length": max_length,
            "dtype": described["dtype"], "prompt": prompt, "variant": variant}
    if engine != "hf":  # the HF engine's shards keep the metadata they had before engines were a choice
        meta["engine"] = engine
    write_parquet_atomic(table, out_path, meta)
    stats.update(meta)
    return stats


def merge_ifd_files(shard_paths: Sequence[str | Path], samples_path: str | Path, out_path: str | Path) -> None:
    """One IFD table aligned with the samples (refuses missing, duplicate or unknown ids, naming them)."""
    table = merge_sample_shards(shard_paths, samples_path, "IFD")
    meta = shard_metadata(shard_paths, ("model", "model_fingerprint", "max_length", "dtype", "prompt", "variant"),
                          "IFD")
    meta["n_ifd_at_least_1"] = int((table["ifd"] >= 1).sum())
    meta["n_ifd_undefined"] = int(table["ifd"].isna().sum())
    meta["n_truncated"] = int(table["truncated"].sum())
    write_parquet_atomic(pa.Table.from_pandas(table, schema=IFD_SCHEMA, preserve_index=False), out_path, meta)
