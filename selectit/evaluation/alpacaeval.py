"""AlpacaEval (v1): win rate of the model's outputs against text-davinci-003's reference outputs.

Generation: each AlpacaEval instruction (taken from the reference file, so the two sides line up) as one
user turn in the chat format ``chat_format``, greedy decoding, at most ``max_new_tokens`` new tokens, cut at
the ``stop`` strings, stripped. The defaults (``DEFAULTS``: the model's own chat template, 2048 tokens, a
stop at "\\n\\nComment:") suit a chat-tuned model and differ from SelectIT's run: its copy of
open-instruct's ``eval/alpaca_farm/run_eval.py`` (``scripts/eval/alpaca_farm.sh``: ``--use_chat_format``
with ``create_prompt_with_tulu_chat_format``, no ``--max_new_tokens``, vLLM) formats
``<|user|>\\n{instruction}\\n<|assistant|>\\n`` (``chat_format: tulu``; the tokenizer adds BOS), decodes
greedily for at most 256 new tokens and stops only at EOS (``stop: []``); ``configs/paper.yaml`` sets those
three. It does not strip the output; we do (the judge reads the same text up to surrounding whitespace).

Judging, by ``settings["judge"]``:

``{"type": "openai", "base_url": ..., "model": ..., "api_key_env": ...}``
    AlpacaEval's own machinery: ``alpaca_eval.evaluate`` with the v1 GPT-4 annotator
    (``alpaca_eval_gpt4``: its ranking prompt, ``ranking_parser``, temperature 0, seeded random order of
    the two outputs) and ``fn_metric="get_winrate"``; only the judge model name and the endpoint change.
    The endpoint goes in a temporary OpenAI client config file (``client_config_path``); the API key is
    read from the environment variable ``api_key_env`` by a small client class at connect time, so it is
    never written to disk or logs. The paper's judge is GPT-4 (``model: gpt-4``); any OpenAI-compatible
    server works (a local one needs no key).
``{"type": "hf", "model_dir": ...}`` (offline default)
    A local causal LM reads the same AlpacaEval v1 ranking prompt (rendered with AlpacaEval's
    ``make_prompts``, turned into chat messages with its ``prompt_to_chatml`` and the judge's chat
    template), followed by the forced answer start ``[{'model': 'model_``; the logits of the two choice
    tokens ``1``/``2`` give P(model ranked first). Both orders are scored and averaged (``debias``; with
    ``debias: false`` one order, drawn from the seed per example, is used). Identical outputs are a tie
    (as in AlpacaEval). Preference 2 (model wins) if the averaged P > 0.5, 1 if < 0.5, else 1.5.
    Deterministic: no sampling, fixed order.

Both paths report ``value`` = AlpacaEval's ``get_winrate`` win rate (ties count half), cross-checked
against ``metrics.win_rate``. The length-controlled win rate needs a Hub download and is not computed.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from selectit.errors import InputError
from selectit.evaluation import textgen as tg
from selectit.evaluation.metrics import win_rate

BENCHMARK = "alpaca_eval"
REFERENCE_FILES = ("alpaca_eval/reference_outputs.json", "alpaca_eval/text_davinci_003/model_outputs.json")
STOPS = ["\n\nComment:"]
ANNOTATOR = "alpaca_eval_gpt4"          # AlpacaEval v1's GPT-4 annotator
ASSISTANT_PREFIX = "[{'model': 'model_"  # forced start of the ranking answer (HF judge)

DEFAULTS: dict[str, Any] = {
    "limit": None,            # number of instructions (None: all 805)
    "max_new_tokens": 2048,
    "batch_size": 8,
    "seed": 42,
    "device": None,
    "dtype": "auto",
    "chat_format": "tokenizer",
    "stop": STOPS,            # strings that end a generation (SelectIT: none, EOS only)
    "generator": None,        # name recorded as the generator (default: the model folder's name)
    "judge": {"type": "hf", "model_dir": None},
}
HF_JUDGE_DEFAULTS = {"type": "hf", "model_dir": None, "batch_size": 4, "debias": True, "dtype": "auto",
                     "device": None, "max_output_tokens": 1024}
OPENAI_JUDGE_DEFAULTS = {"type": "openai", "base_url": "https://api.openai.com/v1", "model": "gpt-4",
                         "api_key_env": "OPENAI_API_KEY", "annotators_config": ANNOTATOR, "num_procs": 4,
                         "timeout": 120.0}


def _ae_configs_dir() -> Path:
    from alpaca_eval import constants

    return Path(constants.EVALUATORS_CONFIG_DIR)


def load_references(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(r, dict) and "instruction" in r and "output" in r
                                             for r in data):
        raise InputError(f"{path}: expected a JSON list of objects with 'instruction' and 'output'")
    return data


def _judge_settings(judge: dict | None, key: str = "judge") -> dict[str, Any]:
    """The judge's settings over its type's defaults; InputError naming the key (``key``, then ``.type``,
    ``.model_dir`` ...) when the judge could not run."""
    judge = dict(judge or {})
    kind = judge.get("type", "hf")
    defaults = {"hf": HF_JUDGE_DEFAULTS, "openai": OPENAI_JUDGE_DEFAULTS}.get(kind)
    if defaults is None:
        raise InputError(f"{key}.type: the judge type must be 'hf' or 'openai', got {kind!r}")
    unknown = sorted(set(judge) - set(defaults))
    if unknown:
        raise InputError(f"{key}: unknown {kind} judge settings {unknown}; known: {sorted(defaults)}")
    out = {**defaults, **judge}
    if kind == "hf" and not out["model_dir"]:
        raise InputError(f"{key}.model_dir: the hf judge needs a prepared local model folder")
    if kind == "openai":
        for name in ("model", "base_url", "api_key_env"):
            if not out[name]:
                raise InputError(f"{key}.{name}: the openai judge needs one (e.g. {defaults[name]!r})")
    return out


def check_data(data_dir: str | Path, settings: dict | None = None) -> None:
    """InputError when ``data_dir`` lacks the AlpacaEval reference outputs."""
    tg.find_data_file(data_dir, REFERENCE_FILES, "AlpacaEval reference outputs")


def check_judge(judge: dict | None, key: str = "judge") -> None:
    """InputError naming the key when the judge could not run (see ``_judge_settings``)."""
    _judge_settings(judge, key)


# --------------------------------------------------------------------------------------- HF judge
def _render_judge_prompts(rows: list[dict[str, str]]) -> list[str]:
    import pandas as pd
    from alpaca_eval.utils import make_prompts

    template = (_ae_configs_dir() / ANNOTATOR / "alpaca_eval.txt").read_text(encoding="utf-8")
    prompts, _ = make_prompts(pd.DataFrame(rows), template)
    return prompts


def _to_judge_text(tokenizer, chatml_prompt: str) -> str:
    from alpaca_eval.utils import prompt_to_chatml

    messages = prompt_to_chatml(chatml_prompt)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant: "
    return text + ASSISTANT_PREFIX


def choice_ids(tokenizer, probe: str, choices: tuple[str, ...] = ("1", "2")) -> tuple[int, ...]:
    """Token id of each choice appended to the probe text; each must be exactly one more token."""
    base = tokenizer(probe, add_special_tokens=False).input_ids
    ids = []
    for choice in choices:
        full = tokenizer(probe + choice, add_special_tokens=False).input_ids
        if len(full) != len(base) + 1 or full[:-1] != base:
            raise InputError(f"the judge tokenizer does not encode choice {choice!r} as one token after the "
                             "answer prefix; use another judge model")
        ids.append(full[-1])
    return tuple(ids)


def _clip(tokenizer, text: str, max_tokens: int) -> str:
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return text if len(ids) <= max_tokens else tokenizer.decode(ids[:max_tokens])


def hf_judge(instructions: list[str], references: list[str], outputs: list[str], judge: dict,
             seed: int) -> list[dict[str, Any]]:
    """Deterministic pairwise judging with a local model; one annotation dict per example."""
    import torch

    model, tokenizer = tg.load_model(judge["model_dir"], {"dtype": judge["dtype"], "device": judge["device"],
                                                          "seed": seed})
    rng = random.Random(seed)
    first_swapped = [rng.random() < 0.5 for _ in instructions]  # True: the model's output shown as model_1
    jobs, rows = [], []
    for i, (ins, ref, out) in enumerate(zip(instructions, references, outputs)):
        if ref == out:
            continue
        orders = [first_swapped[i], not first_swapped[i]] if judge["debias"] else [first_swapped[i]]
        ref_c, out_c = (_clip(tokenizer, t, int(judge["max_output_tokens"])) for t in (ref, out))
        for swapped in orders:
            jobs.append((i, swapped))
            rows.append({"instruction": ins, "output_1": out_c if swapped else ref_c,
                         "output_2": ref_c if swapped else out_c})
    texts = [_to_judge_text(tokenizer, p) for p in _render_judge_prompts(rows)] if rows else []
    p_first: list[float] = []
    if texts:
        id1, id2 = choice_ids(tokenizer, texts[0])
        device = next(model.parameters()).device
        order = sorted(range(len(texts)), key=lambda k: -len(texts[k]))
        p_first = [math.nan] * len(texts)
        bs = int(judge["batch_size"])
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            enc = tokenizer([texts[k] for k in idx], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
            limit = getattr(model.config, "max_position_embeddings", None)
            if limit is not None and enc.input_ids.shape[1] > limit:
                raise InputError(f"a judge prompt has {enc.input_ids.shape[1]} tokens, more than the judge's "
                                 f"{limit}; lower judge.max_output_tokens")
            positions = (enc.attention_mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                               position_ids=positions).logits[:, -1, :].float()
            if not torch.isfinite(logits[:, [id1, id2]]).all():
                raise InputError("the judge produced NaN/inf logits for the choice tokens")
            probs = torch.softmax(logits[:, [id1, id2]], dim=-1)[:, 0].tolist()
            for k, p in zip(idx, probs):
                p_first[k] = p
    per_example: dict[int, list[tuple[bool, float]]] = {}
    for (i, swapped), p in zip(jobs, p_first):
        per_example.setdefault(i, []).append((swapped, p))
    annotations = []
    for i in range(len(instructions)):
        if i not in per_example:
            annotations.append({"preference": 1.5, "p_model": 0.5, "orders": [], "reason": "identical outputs"})
            continue
        # P(the model's output ranked first) in each order shown
        p_model = [p if swapped else 1.0 - p for swapped, p in per_example[i]]
        p = sum(p_model) / len(p_model)
        pref = 2.0 if p > 0.5 else 1.0 if p < 0.5 else 1.5
        annotations.append({"preference": pref, "p_model": p,
                            "orders": [{"model_shown_first": s, "p_model": pm}
                                       for (s, _), pm in zip(per_example[i], p_model)]})
    return annotations


# ------------------------------------------------------------------------------------ OpenAI judge
def _make_client_class():
    import openai

    class EnvKeyOpenAI(openai.OpenAI):
        """OpenAI client whose key comes from a named environment variable (nothing secret on disk)."""

        def __init__(self, api_key_env: str = "OPENAI_API_KEY", **kwargs):
            key = os.environ.get(api_key_env)
            if not key:
                host = urlparse(str(kwargs.get("base_url", ""))).hostname or ""
                if host not in ("127.0.0.1", "localhost", "::1"):
                    raise InputError(f"the OpenAI judge needs an API key in ${api_key_env}")
                key = "no-key-needed-for-a-local-server"
            super().__init__(api_key=key, **kwargs)

    return EnvKeyOpenAI


EnvKeyOpenAI = None  # made on first use (importing openai is slow); alpaca_eval loads it by dotted name


def openai_client(base_url: str, api_key_env: str, timeout: float = 120.0, max_retries: int = 2):
    """An OpenAI-compatible client whose key is read from $api_key_env (a local server needs none)."""
    return _make_client_class()(api_key_env=api_key_env, base_url=base_url, timeout=timeout,
                                max_retries=max_retries)


def openai_judge(model_rows: list[dict], reference_rows: list[dict], judge: dict,
                 seed: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Judge with alpaca_eval's annotator machinery; (annotation per example, alpaca_eval's metrics)."""
    import yaml
    from alpaca_eval import evaluate

    global EnvKeyOpenAI
    if EnvKeyOpenAI is None:
        EnvKeyOpenAI = _make_client_class()
    src = _ae_configs_dir() / judge["annotators_config"] / "configs.yaml"
    if not src.is_file():
        raise InputError(f"alpaca_eval has no annotator config {judge['annotators_config']!r}")
    (name, ann), = yaml.safe_load(src.read_text()).items()
    ann = copy.deepcopy(ann)
    ann["prompt_template"] = str(_ae_configs_dir() / ann["prompt_template"])
    with tempfile.TemporaryDirectory(prefix="selectit-ae-") as tmp:
        client_cfg = Path(tmp) / "openai_client_configs.yaml"
        client_cfg.write_text(yaml.safe_dump({"default": [{
            "client_class": f"{__name__}.EnvKeyOpenAI", "base_url": judge["base_url"],
            "api_key_env": judge["api_key_env"], "timeout": float(judge["timeout"]), "max_retries": 2}]}))
        kwargs = dict(ann.get("completions_kwargs") or {})
        kwargs.update(model_name=judge["model"], requires_chatml=True, num_procs=int(judge["num_procs"]),
                      client_config_path=str(client_cfg))
        ann["completions_kwargs"] = kwargs
        cfg_dir = Path(tmp) / "configs" / "selectit_judge"
        cfg_dir.mkdir(parents=True)
        (cfg_dir / "configs.yaml").write_text(yaml.safe_dump({f"selectit_{name}": ann}))
        leaderboard, annotations = evaluate(
            model_outputs=model_rows, reference_outputs=reference_rows,
            annotators_config=str(cfg_dir / "configs.yaml"), output_path=None, precomputed_leaderboard=None,
            is_return_instead_of_print=True, fn_metric="get_winrate", sort_by="win_rate",
            is_cache_leaderboard=False, is_overwrite_leaderboard=True, caching_path=None, seed=seed,
            name=model_rows[0]["generator"])
    ann_rows = annotations.to_dict(orient="records") if hasattr(annotations, "to_dict") else list(annotations)
    by_key = {(r["instruction"], r["output_1"], r["output_2"]): r for r in ann_rows}
    out = []
    for m, r in zip(model_rows, reference_rows):
        row = by_key.get((m["instruction"], r["output"], m["output"]), {})
        pref = row.get("preference")
        pref = None if pref is None or (isinstance(pref, float) and math.isnan(pref)) else float(pref)
        # the raw answer names models in the order shown, which alpaca_eval drew at random (seeded) and
        # undid in "preference"
        out.append({"preference": pref, "raw_completion": row.get("preference_raw_completion")})
    lb = leaderboard.iloc[0].to_dict()
    metrics = {k: (float(v) if isinstance(v, numbers.Real) else v)
               for k, v in lb.items() if k in ("win_rate", "standard_error", "n_wins", "n_wins_base",
                                               "n_draws", "n_total", "discrete_win_rate")}
    return out, metrics


# ------------------------------------------------------------------------------------------------ run
def _ae_winrate(preferences: list[float]) -> dict[str, Any]:
    from alpaca_eval.metrics import get_winrate

    res = get_winrate([{"preference": p} for p in preferences])
    return {k: float(v) for k, v in res.items()}


def run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict:
    t0 = time.monotonic()
    cfg = tg.merge_settings(DEFAULTS, settings)
    judge = _judge_settings(cfg["judge"])
    cfg["judge"] = {k: v for k, v in judge.items()}
    seed = int(cfg["seed"])
    ref_path = tg.find_data_file(data_dir, REFERENCE_FILES, "AlpacaEval reference outputs")
    references = load_references(ref_path)
    chosen = [references[i] for i in tg.seeded_subset(len(references), cfg["limit"], seed)]
    generator = cfg["generator"] or tg.model_record(model_dir).get("name") or Path(model_dir).name

    model, tokenizer = tg.load_model(model_dir, cfg)
    prompts = [tg.chat_prompt(tokenizer, r["instruction"], cfg["chat_format"]) for r in chosen]
    gens = tg.generate(model, tokenizer, prompts, max_new_tokens=int(cfg["max_new_tokens"]),
                       batch_size=int(cfg["batch_size"]), do_sample=False, stop=list(cfg["stop"]), seed=seed)
    del model
    outputs = [g[0].strip() for g in gens]
    model_rows = [{"instruction": r["instruction"], "output": o, "generator": generator}
                  for r, o in zip(chosen, outputs)]
    reference_rows = [{"instruction": r["instruction"], "output": r["output"],
                       "generator": r.get("generator", "text_davinci_003")} for r in chosen]

    t_judge = time.monotonic()
    ae_metrics: dict[str, Any] = {}
    if judge["type"] == "hf":
        annotations = hf_judge([r["instruction"] for r in chosen], [r["output"] for r in chosen], outputs,
                               judge, seed)
    else:
        annotations, ae_metrics = openai_judge(model_rows, reference_rows, judge, seed)
    prefs = [a["preference"] for a in annotations if a["preference"] is not None]
    if not prefs:
        raise InputError("the judge gave no usable preference (every judge answer failed to parse)")
    ours = win_rate(prefs)
    theirs = _ae_winrate(prefs)
    if abs(ours["win_rate"] - theirs["win_rate"]) > 1e-6:
        raise RuntimeError(f"win rate mismatch: ours {ours['win_rate']} vs alpaca_eval {theirs['win_rate']}")
    predictions = []
    for r, o, a in zip(chosen, outputs, annotations):
        predictions.append({"instruction": r["instruction"], "dataset": r.get("dataset"), "output": o,
                            "reference": r["output"], **a})
    judge_name = "hf:" + str(judge["model_dir"]) if judge["type"] == "hf" else f"openai:{judge['model']}"
    return tg.finish(
        out_path, benchmark=BENCHMARK, metric="win_rate", value=theirs["win_rate"], predictions=predictions,
        settings=cfg, started=t0, model_dir=model_dir, data_dir=data_dir,
        protocol=(f"AlpacaEval v1 win rate vs text-davinci-003 references, greedy generation, judge {judge_name} "
                  "with the alpaca_eval_gpt4 ranking prompt; ties count half"),
        metrics={"win_rate": theirs["win_rate"], "standard_error": theirs.get("standard_error"),
                 "n_wins": ours["n_wins"], "n_losses": ours["n_losses"], "n_draws": ours["n_draws"],
                 "n_judged": ours["n_total"], "n_unparsed": len(annotations) - len(prefs),
                 "discrete_win_rate": theirs.get("discrete_win_rate"),
                 "alpaca_eval_leaderboard": ae_metrics or None, "length_controlled_win_rate": None},
        generator=generator,
        judge={"type": judge["type"],
               "model": tg.model_record(judge["model_dir"]) if judge["type"] == "hf" else
               {"base_url": judge["base_url"], "model": judge["model"],
                "annotators_config": judge["annotators_config"]}},
        data={"reference_file": str(ref_path), "sha256": tg.sha256_file(ref_path)},
        timing={"judge_seconds": round(time.monotonic() - t_judge, 3)},
        example_prompt=prompts[0] if prompts else None,
    )
