"""BIG-Bench Hard, 3-shot chain-of-thought exact match on 40 examples per task, as open-instruct's
``eval/bbh/run_eval.py`` (``--max_num_examples_per_task 40``, no chat format, the vLLM path that
SelectIT's script uses), run through lm-evaluation-harness with one task YAML per BBH task generated
at run time from the local files (see ``lmeval_tasks``). lm_eval's built-in ``bbh_cot_fewshot`` does
not fit: it takes its exemplars from a hub dataset and appends "Let's think step by step." to the
test question, while the protocol uses the ``cot-prompts/<task>.txt`` files verbatim and ends in "A:".

Protocol reproduced:

- Data: ``<data_dir>/bbh/bbh/<task>.json`` (``{"examples": [{"input", "target"}]}``) and
  ``<data_dir>/bbh/cot-prompts/<task>.txt``.
- Sampling: ``random.seed(seed)`` once, then, over the task files in sorted order,
  ``random.sample(examples, limit)`` for each task with more than ``limit`` (40) examples.
  The sorted order is our choice: no revision of open-instruct's code sorts the files; it draws in
  unsorted ``glob`` order, which depends on the file system, so its exact draw cannot be replayed.
  A ``tasks`` subset still draws for every task in ``data_dir`` so a task gets the same examples
  whether or not the others run.
- Prompt: the prompt file minus its first two lines (canary and ``-----``), stripped, then
  ``"\\n\\nQ: " + input + "\\nA:"``. With ``n_shot`` below 3 the last exemplars are left out
  (exemplars are the blank-line-separated blocks that start with ``Q:``).
- Generation: greedy, batched, at most ``max_new_tokens`` (512) tokens, stopped at the first blank
  line ``"\\n\\n"`` (open-instruct's vLLM stop for non-chat prompts; lm_eval also stops at EOS).
- Scoring: the first "[t|T]he answer is (.*?)." match (else the stripped generation) vs the target,
  exact match ignoring case and punctuation (:mod:`selectit.evaluation.answers`).
- Metric: the mean over tasks of the per-task exact match, in percent (open-instruct's
  ``average_exact_match``); ``value_pooled`` is the mean over all examples. With the same number of
  examples in every task (the protocol: 40 each) the two are equal.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from selectit.errors import InputError
from selectit.evaluation import answers
from selectit.evaluation import lmeval_tasks as lt

DEFAULTS: dict[str, Any] = {
    "limit": 40,       # examples per task
    "tasks": None,     # None = every task with both an examples file and a prompt file
    "n_shot": 3,
    "batch_size": 8,
    "max_new_tokens": 512,
    "stop": ["\n\n"],
}


def check_data(data_dir: str | Path, settings: dict | None = None) -> None:
    """InputError when ``data_dir`` lacks the example or prompt file of a task to run."""
    available = list_tasks(data_dir)
    wanted = (settings or {}).get("tasks") or available
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = sorted(set(wanted) - set(available))
    if not available or unknown:
        raise InputError(f"{Path(data_dir) / 'bbh'} has no task {unknown or '(none at all)'}")


def list_tasks(data_dir: str | Path) -> list[str]:
    root = Path(data_dir) / "bbh"
    if not (root / "bbh").is_dir() or not (root / "cot-prompts").is_dir():
        raise InputError(f"{root} must hold bbh/<task>.json and cot-prompts/<task>.txt")
    examples = {p.stem for p in (root / "bbh").glob("*.json")}
    prompts = {p.stem for p in (root / "cot-prompts").glob("*.txt")}
    if examples != prompts:
        raise InputError(f"BBH tasks without a prompt file: {sorted(examples - prompts)}; "
                         f"prompt files without examples: {sorted(prompts - examples)}")
    return sorted(examples)


def read_prompt(path: Path) -> str:
    """The few-shot prompt of a task: the file without its canary and ``-----`` lines, stripped."""
    with open(path, encoding="utf-8") as fh:
        return "".join(fh.readlines()[2:]).strip()


def split_prompt(prompt: str) -> tuple[str, list[str]]:
    """(task description, exemplars) of a prompt; exemplars are the blocks starting with ``Q:``."""
    description, shots = [], []
    for block in prompt.split("\n\n"):
        if block.startswith("Q:"):
            shots.append(block)
        elif shots:
            shots[-1] += "\n\n" + block
        else:
            description.append(block)
    return "\n\n".join(description), shots


def few_shot_prefix(prompt: str, n_shot: int) -> str:
    description, shots = split_prompt(prompt)
    if n_shot >= len(shots):
        return prompt
    return "\n\n".join(([description] if description else []) + shots[:n_shot])


def build_prompt(prefix: str, question: str) -> str:
    """The open-instruct prompt (what the generated lm_eval task produces)."""
    return prefix + "\n\nQ: " + question + "\nA:"


def load_examples(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read BBH file {path}: {exc}") from None
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not all("input" in e and "target" in e for e in examples):
        raise InputError(f"{path}: expected {{'examples': [{{'input', 'target'}}, ...]}}")
    return [{"idx": i, "input": e["input"], "target": e["target"]} for i, e in enumerate(examples)]


def select(data_dir: str | Path, tasks: list[str], limit: int | None, seed: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    chosen = {}
    for task in list_tasks(data_dir):
        examples = load_examples(Path(data_dir) / "bbh" / "bbh" / f"{task}.json")
        if limit and limit < len(examples):
            examples = rng.sample(examples, limit)
        if task in tasks:
            chosen[task] = examples
    return chosen


def run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict:
    started = time.monotonic()
    s = lt.resolve_settings(DEFAULTS, settings)
    s["stop"] = [s["stop"]] if isinstance(s["stop"], str) else list(s["stop"] or [])
    available = list_tasks(data_dir)
    wanted = s["tasks"] or available
    if isinstance(wanted, str):
        wanted = [wanted]
    unknown = [t for t in wanted if t not in available]
    if unknown:
        raise InputError(f"unknown BBH tasks {unknown}; {data_dir} has {available}")
    s["tasks"] = list(wanted)
    chosen = select(data_dir, s["tasks"], s["limit"], s["seed"])
    prefixes = {t: few_shot_prefix(read_prompt(Path(data_dir) / "bbh" / "cot-prompts" / f"{t}.txt"), s["n_shot"])
                for t in s["tasks"]}
    names = {t: f"selectit_bbh_{t}" for t in s["tasks"]}
    with lt.Workdir() as wd:
        for task in s["tasks"]:
            test_file = lt.write_jsonl(wd.data / f"{task}.jsonl", chosen[task])
            lt.write_task_yaml(wd.include, {
                "task": names[task],
                **lt.json_dataset({"test": test_file}, wd.cache),
                "test_split": "test",
                "output_type": "generate_until",
                "doc_to_text": lt.jinja_literal(prefixes[task] + "\n\nQ: ") + "{{input}}" + lt.jinja_literal("\nA:"),
                "doc_to_target": "{{target}}",
                "target_delimiter": " ",
                "num_fewshot": 0,  # the exemplars are part of doc_to_text, as in the prompt files
                "generation_kwargs": {"until": s["stop"], "do_sample": False, "max_gen_toks": int(s["max_new_tokens"])},
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            })
        out = lt.evaluate_tasks(model_dir, wd.include, list(names.values()), s)

    predictions, per_task = [], {}
    for task in s["tasks"]:
        rows = chosen[task]
        task_preds = []
        for sample, row in lt.aligned_samples(out["samples"][names[task]], rows, task):
            generation = lt.sample_generation(sample)
            pred = answers.extract_bbh_answer(generation)
            task_preds.append({
                "id": f"{task}/{row['idx']}", "task": task, "doc_index": row["idx"], "question": row["input"],
                "target": row["target"], "generation": generation, "prediction": pred,
                "correct": answers.exact_match(pred, row["target"]), "prompt": lt.sample_context(sample),
            })
        per_task[task] = {"n": len(task_preds), "exact_match": lt.percent([p["correct"] for p in task_preds])}
        predictions.extend(task_preds)
    if not predictions:
        raise InputError("no BBH examples were selected")
    value = sum(v["exact_match"] for v in per_task.values()) / len(per_task)
    return lt.finish(
        out_path, benchmark="bbh", metric="exact_match", value=value, predictions=predictions, settings=s,
        started=started, model_dir=model_dir, data_dir=data_dir,
        protocol=f"open-instruct BBH {s['n_shot']}-shot CoT from cot-prompts, 'the answer is' exact match, "
                 "mean over tasks, via lm_eval generate_until",
        value_pooled=lt.percent([p["correct"] for p in predictions]), per_task=per_task,
        runtime=out["runtime"],
    )
