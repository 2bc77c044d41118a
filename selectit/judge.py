"""AlpaGasus-style judge (Chen et al. 2023), a baseline of Table 1: a judge model rates every
(instruction, response) pair from 0 to 5 for accuracy and helpfulness; AlpaGasus keeps the pairs rated >= 4.5.

The prompt (``JUDGE_PROMPT``) is written for this project in AlpaGasus' style: the pair, then the request to
rate it 0-5 and to answer "Score: <n>" on the first line.

Judges (``selection.judge.type``):

``hf`` (offline default): a local prepared model folder (``model_dir``). The judge text is the prompt as one
    user turn in the model's chat template (plain text when it has none) followed by the forced answer start
    "Score: "; the score is the expected value sum_d d * P(d) over the single-token digits "0".."5" at the
    next position, P renormalised over the six digits (``expected_score``); ``score_mass`` is the
    full-vocabulary probability on them. Batched with the rater's machinery (token budget, shared-prefix KV
    cache). Long pairs lose the middle of the response (then of the instruction) to fit ``max_length``,
    flagged ``truncated``.
``openai``: an OpenAI-compatible chat endpoint (``model``, ``base_url``, key from ``$api_key_env``), greedy
    (temperature 0). The score is the first number after the first "Score" of the answer (``parse_score``).
    An answer without one in 0..5 is flagged ``unparsed`` (score NaN) and counted. Error policy
    ``on_unparsed``: ``rank_last`` (default; such samples rank after every scored one and the merged table and
    manifests count them) or ``error`` (``merge_judge`` stops, naming them). A request that still fails after
    the client's retries stops the job: no sample is ever dropped.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from selectit.atomic import write_parquet_atomic
from selectit.engines import open_engine
from selectit.engines.base import Engine
from selectit.engines.hf import HFEngine
from selectit.errors import InputError
from selectit.evaluation.alpacaeval import choice_ids, openai_client
from selectit.host import prepare_cpu_threads
from selectit.models import read_model_info
from selectit.prompts import EncodedRow, cut_middle
from selectit.sample_shards import merge_sample_shards, shard_metadata

JUDGE_PROMPT = (
    "You are checking the quality of the examples in an instruction-tuning dataset.\n\n"
    "### Instruction\n{instruction}\n\n"
    "### Response\n{response}\n\n"
    "### Your task\n"
    "Rate how accurate and helpful the response is as an answer to the instruction, on a scale from 0 to 5: "
    "0 means wrong, off topic or no help at all; 5 means fully correct, complete and helpful. "
    "Judge what the response says, not how long it is. "
    'Write "Score: " and the score on the first line, then explain your rating briefly on the next line.'
)
PROMPT_SHA = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()[:12]
ANSWER_PREFIX = "Score:"
SCORES = tuple(range(6))  # the digits "0".."5"

COMMON_DEFAULTS: dict[str, Any] = {"type": "hf", "threshold": 4.5, "on_unparsed": "rank_last"}
HF_DEFAULTS: dict[str, Any] = {"model_dir": None, "max_length": 2048, "token_budget": 8192}
OPENAI_DEFAULTS: dict[str, Any] = {"model": "gpt-3.5-turbo", "base_url": "https://api.openai.com/v1",
                                   "api_key_env": "OPENAI_API_KEY", "max_tokens": 32, "timeout": 120.0,
                                   "max_retries": 2, "num_workers": 4}
# the keys whose change changes the judge's scores (the judge_shard jobs' params)
RESULT_KEYS = {"hf": ("type", "model_dir", "max_length"), "openai": ("type", "model", "base_url", "max_tokens")}

JUDGE_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("score", pa.float64()),  # 0..5; NaN when unparsed
    ("unparsed", pa.bool_()),
    ("truncated", pa.bool_()),
    ("score_mass", pa.float64()),  # hf: probability on the six digits; openai: NaN
    ("answer", pa.string()),  # openai: the judge's raw answer; hf: empty
])


def judge_settings(raw: dict | None, first_rater: str) -> dict[str, Any]:
    """``selection.judge`` with defaults filled in; unknown keys for the chosen type stop with their names."""
    raw = dict(raw or {})
    kind = raw.get("type", COMMON_DEFAULTS["type"])
    own = {"hf": HF_DEFAULTS, "openai": OPENAI_DEFAULTS}.get(kind)
    if own is None:
        raise InputError(f"config selection.judge.type must be 'hf' or 'openai', got {kind!r}")
    unknown = sorted(set(raw) - set(COMMON_DEFAULTS) - set(own))
    if unknown:
        raise InputError(f"config selection.judge: unknown keys {unknown} for type {kind!r}; "
                         f"known: {sorted(set(COMMON_DEFAULTS) | set(own))}")
    out = {**COMMON_DEFAULTS, **own, **raw}
    if out["on_unparsed"] not in ("rank_last", "error"):
        raise InputError(f"config selection.judge.on_unparsed must be rank_last or error, got {out['on_unparsed']!r}")
    if kind == "hf" and not out["model_dir"]:
        out["model_dir"] = f"results/models/{first_rater}"
    if kind == "hf":
        out["model_dir"] = str(out["model_dir"]).rstrip("/")
    return out


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that change the scores, plus the prompt's hash (editing the prompt reruns the judge)."""
    return {**{k: settings[k] for k in RESULT_KEYS[settings["type"]]}, "prompt_sha": PROMPT_SHA}


def run_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a judge job runs with that change no score (batch size, workers, retries, the key's variable):
    the judge_shard jobs' resources, so editing them reruns nothing. The threshold and the unparsed policy act
    after the scores and are not the job's."""
    own = {"hf": HF_DEFAULTS, "openai": OPENAI_DEFAULTS}[settings["type"]]
    return {k: settings[k] for k in own if k not in RESULT_KEYS[settings["type"]]}


def job_settings(result: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """What a judge job scores with: its result settings (params, without the prompt's hash) and run settings."""
    return {**{k: v for k, v in result.items() if k != "prompt_sha"}, **run}


def judge_message(instruction: str, response: str) -> str:
    return JUDGE_PROMPT.format(instruction=instruction, response=response)


def expected_score(logits: np.ndarray) -> np.ndarray:
    """Expected score sum_d d * P(d) with P = softmax over the digit logits (N x 6, digits 0..5)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return p @ np.asarray(SCORES, dtype=np.float64)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_score(answer: str | None) -> float | None:
    """The first number after the first "Score" (any case) of a judge answer, if it is in 0..5; else None."""
    if not answer:
        return None
    at = re.search(r"score", answer, flags=re.IGNORECASE)
    if not at:
        return None
    number = _NUMBER.search(answer, at.end())
    if not number:
        return None
    value = float(number.group())
    return value if 0 <= value <= max(SCORES) else None


# --------------------------------------------------------------------------------------------- hf judge
def _has_chat(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def judge_text(tokenizer: Any, instruction: str, response: str) -> str:
    """The judge prompt as one user turn (chat template, or plain "User: ... Assistant:"), up to the answer."""
    message = judge_message(instruction, response)
    if _has_chat(tokenizer):
        return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                             add_generation_prompt=True)
    return f"User: {message}\n\nAssistant: "


def score_prefix_and_ids(tokenizer: Any, probe: str) -> tuple[str, list[int]]:
    """The forced answer start and the ids of the digits 0..5 after it, each a single token.

    The answer text is "Score: <d>". Tokenizers that glue a space to a digit (" 4") use the prefix "Score:"
    and the tokens " 0".." 5"; those that split it ("▁", "4") use "Score: " and "0".."5"."""
    for prefix, sep in ((ANSWER_PREFIX, " "), (ANSWER_PREFIX + " ", "")):
        try:
            ids = choice_ids(tokenizer, probe + prefix, tuple(sep + str(d) for d in SCORES))
        except InputError:
            continue
        if len(set(ids)) == len(SCORES):
            return prefix, list(ids)
    raise InputError('the judge tokenizer encodes the scores 0..5 after "Score:" as more than one token each; '
                     "use another judge model")


def _encode(tokenizer: Any, text: str) -> list[int]:
    # a chat template writes its own special tokens (BOS); plain text gets the tokenizer's
    return tokenizer(text, add_special_tokens=not _has_chat(tokenizer))["input_ids"]


def encode_judge_row(tokenizer: Any, instruction: str, response: str, prefix: str,
                     max_length: int) -> tuple[list[int], bool]:
    """Token ids of one judge text; over max_length, the middle of the response (then of the instruction) is cut."""
    ids = _encode(tokenizer, judge_text(tokenizer, instruction, response) + prefix)
    if len(ids) <= max_length:
        return ids, False
    instr = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    resp = tokenizer(response, add_special_tokens=False)["input_ids"]
    budget = max_length - (len(ids) - len(instr) - len(resp)) - 8  # a margin for re-tokenisation at the cuts
    if budget < 2:
        raise InputError(f"selection.judge.max_length={max_length} is too small for the judge prompt itself")
    instr_keep = min(len(instr), max(budget // 4, budget - len(resp)))
    resp_keep = budget - instr_keep
    cut_instr = tokenizer.decode(cut_middle(instr, instr_keep))
    cut_resp = tokenizer.decode(cut_middle(resp, resp_keep))
    ids = _encode(tokenizer, judge_text(tokenizer, cut_instr, cut_resp) + prefix)
    if len(ids) > max_length:
        raise InputError(f"a judge text is {len(ids)} tokens after truncation, more than "
                         f"selection.judge.max_length={max_length}; raise it")
    return ids, True


def hf_judge_shard(shard: pd.DataFrame, model: Any, tokenizer: Any, max_length: int, token_budget: int = 8192,
                   model_name: str = "judge", progress: bool = True) -> tuple[pa.Table, dict[str, Any]]:
    """Expected 0-5 scores of every sample of a shard with a local judge; rows keep the shard's order. ``model``: a
    loaded HF model, or any ``selectit.engines.base.Engine`` (``tokenizer``: its tokenizer)."""
    marker = "\x00INSTRUCTION\x00"
    probe = judge_text(tokenizer, marker, "")
    prefix, score_ids = score_prefix_and_ids(tokenizer, probe)
    rows = []
    for pos, (instruction, response) in enumerate(zip(shard["instruction"], shard["response"])):
        ids, truncated = encode_judge_row(tokenizer, instruction, response, prefix, max_length)
        rows.append(EncodedRow(pos, ids, truncated))
    head = _encode(tokenizer, probe[:probe.index(marker)])
    engine = model if isinstance(model, Engine) else HFEngine(model, tokenizer, model_name)
    logits, mass, stats = engine.score(rows, list(shard["id"]), score_ids, prefix_ids=head,
                                       token_budget=token_budget, progress=progress)
    n = len(shard)
    table = pa.table({
        "id": pa.array(shard["id"].tolist(), pa.string()),
        "score": pa.array(expected_score(logits) if n else [], pa.float64()),
        "unparsed": pa.array([False] * n, pa.bool_()),
        "truncated": pa.array([r.truncated for r in rows], pa.bool_()),
        "score_mass": pa.array(mass.astype(np.float64), pa.float64()),
        "answer": pa.array([""] * n, pa.string()),
    }, schema=JUDGE_SCHEMA)
    stats.update(answer_prefix=prefix, score_token_ids=score_ids, truncated_rows=int(sum(r.truncated for r in rows)))
    return table, stats


# ----------------------------------------------------------------------------------------- openai judge
def openai_judge_shard(shard: pd.DataFrame, settings: dict[str, Any]) -> tuple[pa.Table, dict[str, Any]]:
    """0-5 scores from an OpenAI-compatible chat endpoint (temperature 0), parsed from each answer."""
    client = openai_client(settings["base_url"], settings["api_key_env"], float(settings["timeout"]),
                           int(settings["max_retries"]))

    def ask(message: str) -> str:
        reply = client.chat.completions.create(model=settings["model"], temperature=0,
                                               max_tokens=int(settings["max_tokens"]),
                                               messages=[{"role": "user", "content": message}])
        return reply.choices[0].message.content or ""

    start = time.perf_counter()
    messages = [judge_message(i, r) for i, r in zip(shard["instruction"], shard["response"])]
    with ThreadPoolExecutor(max_workers=max(1, int(settings["num_workers"]))) as pool:
        answers = list(pool.map(ask, messages))
    scores = [parse_score(a) for a in answers]
    n = len(shard)
    table = pa.table({
        "id": pa.array(shard["id"].tolist(), pa.string()),
        "score": pa.array([math.nan if s is None else s for s in scores], pa.float64()),
        "unparsed": pa.array([s is None for s in scores], pa.bool_()),
        "truncated": pa.array([False] * n, pa.bool_()),
        "score_mass": pa.array([math.nan] * n, pa.float64()),
        "answer": pa.array(answers, pa.string()),
    }, schema=JUDGE_SCHEMA)
    return table, {"rows": n, "requests": n, "unparsed": sum(s is None for s in scores),
                   "seconds": round(time.perf_counter() - start, 3)}


# ------------------------------------------------------------------------------------------------ files
def judge_shard_file(settings: dict[str, Any], shard: pd.DataFrame, out_path: str | Path, dtype: str | None = "auto",
                     threads: int | None = None, gpus: int = 1, engine: str = "hf") -> dict[str, Any]:
    """Judge one shard and write it atomically, with the judge's identity and settings as metadata."""
    meta: dict[str, Any] = {"type": settings["type"], "prompt_sha": PROMPT_SHA}
    if settings["type"] == "hf":
        cpu = prepare_cpu_threads(threads)  # before torch loads: OpenMP reads its settings once
        info = read_model_info(settings["model_dir"])
        max_length = int(settings["max_length"])
        with open_engine(engine, settings["model_dir"], dtype=dtype, gpus=gpus, threads=cpu["threads"],
                         model_name=info["name"], max_model_len=max_length + 1) as runner:
            table, stats = hf_judge_shard(shard, runner, runner.tokenizer, max_length, int(settings["token_budget"]),
                                          info["name"])
            described = runner.describe()
        meta.update(model=info["name"], model_fingerprint=info["fingerprint"], dtype=described["dtype"],
                    max_length=max_length)
        if engine != "hf":  # the HF engine's shards keep the metadata they had before engines were a choice
            meta["engine"] = engine
    else:
        table, stats = openai_judge_shard(shard, settings)
        meta.update(model=settings["model"], base_url=settings["base_url"], max_tokens=int(settings["max_tokens"]))
    write_parquet_atomic(table, out_path, meta)
    stats.update(meta)
    return stats


def merge_judge_files(shard_paths: Sequence[str | Path], samples_path: str | Path, out_path: str | Path,
                      on_unparsed: str = "rank_last") -> dict[str, Any]:
    """One judge table aligned with the samples (refuses missing, duplicate or unknown ids, naming them); with
    ``on_unparsed: error`` any unparsed judge answer stops the merge, naming the samples."""
    table = merge_sample_shards(shard_paths, samples_path, "judge")
    meta = shard_metadata(shard_paths, ("type", "model", "model_fingerprint", "base_url", "dtype", "max_length",
                                        "max_tokens", "prompt_sha"), "judge")
    unparsed = table.loc[table["unparsed"], "id"].tolist()
    if unparsed and on_unparsed == "error":
        shown = ", ".join(map(repr, unparsed[:10])) + (f" and {len(unparsed) - 10} more" if len(unparsed) > 10 else "")
        raise InputError(f"the judge gave no parseable score 0-5 for {len(unparsed)} samples: {shown} "
                         "(see their `answer` in results/judge/); set selection.judge.on_unparsed: rank_last "
                         "to rank them last instead")
    bad = table[~table["unparsed"] & ~np.isfinite(table["score"])]
    if len(bad):
        raise InputError(f"judge: NaN/inf scores for samples {bad['id'].tolist()[:10]}")
    meta["n_unparsed"] = len(unparsed)
    meta["n_truncated"] = int(table["truncated"].sum())
    write_parquet_atomic(pa.Table.from_pandas(table, schema=JUDGE_SCHEMA, preserve_index=False), out_path, meta)
    return meta
