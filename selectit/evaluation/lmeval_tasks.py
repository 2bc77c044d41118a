"""Shared plumbing for the MMLU / GSM8K / BBH evaluators, which run on lm-evaluation-harness.

Why our own task YAMLs rather than lm_eval's built-in ``mmlu`` / ``gsm8k`` / ``bbh`` configs: the paper
evaluated with open-instruct's scripts, and the built-in configs differ from them in prompt details
(MMLU's header spacing and per-question shot reduction; GSM's ``Q:/A:`` format, stop strings and the
CoT exemplars' wording; BBH's ``A: Let's think step by step.`` suffix and 3-shot exemplars taken
from a hub dataset instead of the ``cot-prompts`` files). So every run writes, into a fresh temporary
include folder:

- the documents as JSON-lines (the real field schema of each data set, plus an ``idx`` field), and
- one complete task YAML per task (``dataset_path: json`` with *absolute* ``data_files``; relative
  paths would resolve against the working directory, not the YAML),

and loads them with ``TaskManager(include_path=..., include_defaults=False)``, which also skips
indexing lm_eval's thousands of built-in YAMLs. lm_eval then builds the few-shot contexts and runs
the model (``HFLM``: batched loglikelihood for MMLU, batched greedy ``generate_until`` for GSM/BBH).
Scores are recomputed by our modules from lm_eval's logged samples (``log_samples=True``) with the
open-instruct answer extraction in :mod:`selectit.evaluation.answers`.

Everything runs offline: importing this module sets ``HF_HUB_OFFLINE=1`` and
``HF_DATASETS_OFFLINE=1`` unless the caller has set them, and the ``datasets`` cache for the JSON
files lives in the temporary folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from selectit.engines import open_engine  # noqa: E402
from selectit.errors import InputError  # noqa: E402
from selectit.evaluation.textgen import finish as write_result  # noqa: E402
from selectit.models import parse_dtype  # noqa: E402

COMMON_DEFAULTS: dict[str, Any] = {
    "batch_size": 8,
    "seed": 42,
    "device": None,   # None/"auto": cuda when available, else cpu
    "dtype": "auto",  # auto|bf16|fp16|fp32 (selectit.models.parse_dtype)
    "max_length": None,  # model context length; None: lm_eval reads it from the model config
    "chat_format": None,  # only None/"none": the protocol is open-instruct's non-chat one
    "num_threads": None,  # torch CPU threads; None = torch's default (set it to the rule's threads on shared CPUs)
    "engine": "hf",  # hf: lm_eval's HFLM; another engine of selectit.engines: through selectit.evaluation.engine_lm
}
NONE_IS_A_VALUE = ("subjects", "tasks", "device", "max_length", "chat_format", "num_threads")


def set_offline() -> None:
    """Make sure neither the hub nor the datasets library tries the network."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def resolve_settings(defaults: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with the caller's settings; unknown keys are an error (typos would otherwise
    silently run the default protocol). ``None`` means "the default", so ``limit: null`` is the
    protocol's size (all MMLU, 200 GSM, 40 per BBH task); ``limit: all`` (or 0) takes every example."""
    merged = {**COMMON_DEFAULTS, **defaults}
    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(merged))
    if unknown:
        raise InputError(f"unknown settings {unknown}; known: {sorted(merged)}")
    for key, value in settings.items():
        if value is not None or key in NONE_IS_A_VALUE:
            merged[key] = value
    if merged.get("chat_format") not in (None, "none"):
        raise InputError(f"chat_format={merged['chat_format']!r}: this benchmark follows open-instruct's "
                         "non-chat protocol (as SelectIT's eval scripts run it); use null")
    if merged.get("limit") in ("all", 0):
        merged["limit"] = None  # every example
    elif merged.get("limit") is not None:
        merged["limit"] = int(merged["limit"])
        if merged["limit"] < 1:
            raise InputError(f"settings.limit must be >= 1, 'all' or null, got {merged['limit']}")
    for key in ("batch_size", "seed", "n_shot", "max_new_tokens"):
        if key in merged:
            merged[key] = int(merged[key])
    if merged.get("n_shot", 0) < 0:
        raise InputError("settings.n_shot must be >= 0")
    if merged["batch_size"] < 1:
        raise InputError("settings.batch_size must be >= 1")
    return merged


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype(dtype: str | None):
    """(torch dtype, its short name) for a settings value."""
    torch_dtype = parse_dtype(dtype)
    return torch_dtype, str(torch_dtype).replace("torch.", "")


def jinja_literal(text: str) -> str:
    """``text`` as a Jinja template that renders to itself (lm_eval renders prompt fields with Jinja)."""
    if "{% endraw %}" in text:
        raise InputError("prompt text contains '{% endraw %}' and cannot be embedded in a task template")
    return "{% raw %}" + text + "{% endraw %}" if text else ""


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path.resolve())


def json_dataset(files: dict[str, str | Path], cache_dir: str | Path) -> dict[str, Any]:
    """Task-config keys that make lm_eval read local JSON-lines files (absolute paths)."""
    return {
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {split: str(Path(p).resolve()) for split, p in files.items()},
            "cache_dir": str(Path(cache_dir).resolve()),
        },
    }


def write_task_yaml(include_dir: str | Path, config: dict[str, Any]) -> str:
    """Write one task config as ``<task>.yaml`` under ``include_dir``; return the task name."""
    import yaml

    name = config["task"]
    config = {**config, "metadata": {"version": 1.0, **config.get("metadata", {})}}
    path = Path(include_dir) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, allow_unicode=True, sort_keys=False, width=1 << 20)
    return name


class Workdir:
    """A temporary folder with ``include/`` (task YAMLs), ``data/`` (JSON-lines) and ``hf_cache/``."""

    def __init__(self, keep: str | Path | None = None):
        if keep:
            self.root = Path(keep)
            self.root.mkdir(parents=True, exist_ok=True)
            self._tmp = None
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="selectit-eval-")
            self.root = Path(self._tmp.name)
        self.include = self.root / "include"
        self.data = self.root / "data"
        self.cache = self.root / "hf_cache"
        for folder in (self.include, self.data, self.cache):
            folder.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> "Workdir":
        return self

    def __exit__(self, *exc) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def evaluate_tasks(model_dir: str | Path, include_dir: str | Path, task_names: list[str],
                   settings: dict[str, Any]) -> dict[str, Any]:
    """Run lm_eval on the tasks registered in ``include_dir``.

    Returns ``{"samples": {task: [sample, ...] sorted by doc_id}, "results": lm_eval's per-task
    metrics, "n_shot": {...}, "runtime": {device, dtype, max_length, torch_threads}}``.
    ``settings`` supplies batch_size, device, dtype, seed, max_length and num_threads.
    """
    set_offline()
    if not Path(model_dir).is_dir():
        raise InputError(f"model folder {model_dir} does not exist")
    # heavy: lm_eval and torch load only when an evaluation runs
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if settings.get("num_threads"):
        import torch  # heavy

        torch.set_num_threads(int(settings["num_threads"]))
    torch_dtype, _ = resolve_dtype(settings.get("dtype"))
    lm_kwargs: dict[str, Any] = {
        "pretrained": str(model_dir),
        "device": resolve_device(settings.get("device")),
        "dtype": torch_dtype,
        "batch_size": int(settings.get("batch_size") or 1),
        "trust_remote_code": False,
    }
    if settings.get("max_length"):
        lm_kwargs["max_length"] = int(settings["max_length"])
    engine = settings.get("engine") or "hf"
    if engine == "hf":
        lm = HFLM(**lm_kwargs)
    else:
        from selectit.evaluation.engine_lm import EngineLM  # heavy: imports lm_eval

        runner = open_engine(engine, model_dir, dtype=settings.get("dtype"), seed=int(settings.get("seed", 42)),
                             max_model_len=lm_kwargs.get("max_length"))
        lm = EngineLM(runner, max_length=lm_kwargs.get("max_length"))
        lm_kwargs["device"] = f"{engine} ({runner.describe().get('dtype')})"
    manager = TaskManager(include_path=str(include_dir), include_defaults=False)
    missing = [t for t in task_names if t not in manager.all_tasks]
    if missing:
        raise InputError(f"lm_eval did not register the generated tasks {missing} from {include_dir}")
    seed = int(settings.get("seed", 42))
    try:
        results = simple_evaluate(
            model=lm, tasks=list(task_names), task_manager=manager, log_samples=True, bootstrap_iters=0,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    finally:
        if engine != "hf":
            lm.engine.close()
    import torch  # heavy

    samples = {name: sorted(results["samples"].get(name, []), key=lambda s: s["doc_id"]) for name in task_names}
    runtime = {"device": lm_kwargs["device"], "dtype": str(torch_dtype).replace("torch.", ""),
               "max_length": getattr(lm, "max_length", None), "torch_threads": torch.get_num_threads()}
    return {"samples": samples, "results": results.get("results", {}), "n_shot": results.get("n-shot", {}),
            "runtime": runtime}


def sample_context(sample: dict[str, Any]) -> str:
    """The full prompt lm_eval gave the model for one logged sample."""
    args = sample["arguments"]
    first = args[0] if isinstance(args, (list, tuple)) else args
    if isinstance(first, dict):  # some versions log {"arg_0": ..., "arg_1": ...}
        return first.get("arg_0", "")
    return first[0]


def sample_generation(sample: dict[str, Any]) -> str:
    """The (unfiltered) generation of a generate_until sample."""
    resp = sample["resps"][0]
    return resp[0] if isinstance(resp, (list, tuple)) else resp


def aligned_samples(samples: list[dict[str, Any]], rows: list[dict[str, Any]], where: str) -> list[tuple[dict, dict]]:
    """Pair lm_eval's logged samples with our rows, refusing a count or order mismatch (never misalign)."""
    if len(samples) != len(rows):
        raise RuntimeError(f"lm_eval returned {len(samples)} samples for {where}, expected {len(rows)}")
    pairs = []
    for sample in samples:
        row = rows[sample["doc_id"]]
        if sample["doc"]["idx"] != row["idx"]:
            raise RuntimeError(f"lm_eval sample order mismatch in {where}")
        pairs.append((sample, row))
    return pairs


def percent(correct: list[bool]) -> float:
    return 100.0 * sum(bool(c) for c in correct) / len(correct) if correct else 0.0


LMEVAL_PACKAGES = ("torch", "transformers", "lm_eval", "datasets")


def finish(out_path: str | Path, **fields: Any) -> dict[str, Any]:
    """The shared result record (selectit.evaluation.textgen.finish) with lm_eval's package versions."""
    return write_result(out_path, packages=LMEVAL_PACKAGES, **fields)
