"""GSM8K, 8-shot chain-of-thought exact match on 200 test questions, as open-instruct's
``eval/gsm/run_eval.py`` (``--n_shot 8 --max_num_examples 200``, no chat format), run through
lm-evaluation-harness with a task YAML generated at run time (see ``lmeval_tasks``).

Protocol reproduced:

- Data: ``<data_dir>/gsm8k/test.jsonl`` (question, answer ending ``#### N``). The reference is the
  text after ``####`` with number commas removed.
- Sampling: ``random.seed(seed)`` then ``random.sample(test, limit)`` when ``limit`` (default 200) is
  smaller than the test set; with fewer than 8 shots the exemplars are then drawn with the same
  generator, as open-instruct does.
- Exemplars: the 8 chain-of-thought exemplars of Wei et al. (2022, Table 20). We read them at run
  time from lm_eval's installed ``gsm8k-cot.yaml`` (same questions and reasoning) and end each with
  "So the answer is N." as open-instruct's copy has it (lm_eval's says "The answer is N.").
- Prompt: ``"Answer the following questions.\\n\\n"`` + ``"Question: {q}\\nAnswer: {cot}"`` joined by
  blank lines + ``"\\n\\nQuestion: {test question stripped}\\nAnswer:"`` (0 shots: "Answer the following
  question.\\n\\n" and no exemplars).
- Generation: greedy, batched, at most ``max_new_tokens`` (512) tokens, stopped at the first newline
  (open-instruct's stop for non-chat prompts; lm_eval also stops at the tokenizer's EOS).
- Scoring: the last number of the generation vs the reference, exact match ignoring case and
  punctuation (:mod:`selectit.evaluation.answers`), in percent.
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
    "limit": 200,      # None = 200 (the protocol); "all" = the whole test set
    "n_shot": 8,
    "batch_size": 8,
    "max_new_tokens": 512,
    "stop": ["\n"],
}
TASK = "selectit_gsm8k_cot"


def load_exemplars() -> list[dict[str, str]]:
    """The 8 Wei et al. CoT exemplars (question, cot_answer) in open-instruct's wording."""
    import re

    import lm_eval
    import yaml

    path = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k-cot.yaml"
    if not path.is_file():
        raise InputError(f"lm_eval's {path} is missing; the GSM8K CoT exemplars are read from it")
    samples = (yaml.safe_load(path.read_text()).get("fewshot_config") or {}).get("samples") or []
    out = []
    for sample in samples:
        target = " ".join(sample["target"].split())
        match = re.fullmatch(r"(.*\.) The answer is (\S+)\.", target)
        if not match:
            raise InputError(f"unexpected GSM8K exemplar ending in {path}: {target[-60:]!r}")
        out.append({"question": " ".join(sample["question"].split()),
                    "cot_answer": f"{match.group(1)} So the answer is {match.group(2)}."})
    if len(out) != 8 or not out[0]["question"].startswith("There are 15 trees"):
        raise InputError(f"{path} does not hold the 8 Wei et al. GSM8K exemplars")
    return out


TEST_FILE = "gsm8k/test.jsonl"


def check_data(data_dir: str | Path, settings: dict | None = None) -> None:
    """InputError when ``data_dir`` lacks the file this benchmark reads (before any job runs)."""
    path = Path(data_dir) / TEST_FILE
    if not path.is_file():
        raise InputError(f"{path} does not exist: data_dir must hold {TEST_FILE}")


def load_test(data_dir: str | Path) -> list[dict[str, Any]]:
    check_data(data_dir)
    path = Path(data_dir) / TEST_FILE
    rows = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            rec = json.loads(line)
            if "question" not in rec or "answer" not in rec:
                raise InputError(f"{path} line {i + 1}: needs 'question' and 'answer'")
            rows.append({"idx": len(rows), "question": rec["question"], "answer": rec["answer"],
                         "reference": answers.gsm_reference(rec["answer"])})
    return rows


def select(test: list[dict], exemplars: list[dict], limit: int | None, n_shot: int, seed: int):
    """open-instruct's sampling: one generator seeded once, test questions first, then exemplars."""
    rng = random.Random(seed)
    if limit and limit < len(test):
        test = rng.sample(test, limit)
    if n_shot > len(exemplars):
        raise InputError(f"n_shot={n_shot}, but there are only {len(exemplars)} GSM8K exemplars")
    if 0 < n_shot < len(exemplars):
        exemplars = rng.sample(exemplars, n_shot)
    return test, exemplars[:n_shot]


def prefix(exemplars: list[dict]) -> str:
    if not exemplars:
        return "Answer the following question.\n\n"
    demos = [f"Question: {e['question']}\nAnswer: {e['cot_answer']}" for e in exemplars]
    return "Answer the following questions.\n\n" + "\n\n".join(demos) + "\n\n"


def build_prompt(exemplars: list[dict], question: str) -> str:
    """The open-instruct prompt (what the generated lm_eval task produces)."""
    return prefix(exemplars) + "Question: " + question.strip() + "\nAnswer:"


def run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict:
    started = time.monotonic()
    s = lt.resolve_settings(DEFAULTS, settings)
    s["stop"] = [s["stop"]] if isinstance(s["stop"], str) else list(s["stop"] or [])
    test, shots = select(load_test(data_dir), load_exemplars(), s["limit"], s["n_shot"], s["seed"])
    if not test:
        raise InputError("no GSM8K questions were selected")
    with lt.Workdir() as wd:
        test_file = lt.write_jsonl(wd.data / "gsm8k_test.jsonl",
                                   [{"question": r["question"], "answer": r["answer"], "idx": r["idx"]} for r in test])
        config = {
            "task": TASK,
            **lt.json_dataset({"test": test_file}, wd.cache),
            "test_split": "test",
            "output_type": "generate_until",
            "description": lt.jinja_literal("Answer the following questions.\n\n" if shots else "Answer the following question.\n\n"),
            "doc_to_text": "Question: {{question.strip()}}\nAnswer:",
            "doc_to_target": "{{answer.split('####')[-1].strip()}}",
            "target_delimiter": " ",
            "fewshot_delimiter": "\n\n",
            "num_fewshot": len(shots),
            "generation_kwargs": {"until": s["stop"], "do_sample": False, "max_gen_toks": int(s["max_new_tokens"])},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        }
        if shots:
            # exemplars render through the same doc_to_text/doc_to_target: the CoT sits in "answer" (no '####')
            config["fewshot_config"] = {"sampler": "first_n",
                                        "samples": [{"question": e["question"], "answer": e["cot_answer"]} for e in shots]}
        lt.write_task_yaml(wd.include, config)
        out = lt.evaluate_tasks(model_dir, wd.include, [TASK], s)

    predictions = []
    for sample, row in lt.aligned_samples(out["samples"][TASK], test, TASK):
        generation = lt.sample_generation(sample)
        pred = answers.extract_gsm_answer(generation)
        predictions.append({
            "id": row["idx"], "doc_index": row["idx"], "question": row["question"], "target": row["reference"],
            "generation": generation, "prediction": pred, "correct": answers.exact_match(pred, row["reference"]),
            "prompt": lt.sample_context(sample),
        })
    value = lt.percent([p["correct"] for p in predictions])
    return lt.finish(
        out_path, benchmark="gsm", metric="exact_match", value=value, predictions=predictions, settings=s,
        started=started, model_dir=model_dir, data_dir=data_dir,
        protocol=f"open-instruct GSM8K {len(shots)}-shot CoT, last-number exact match, via lm_eval generate_until",
        exemplars=shots, runtime=out["runtime"],
    )
