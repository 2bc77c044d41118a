"""MMLU, 5-shot accuracy, as open-instruct's ``eval/mmlu/run_eval.py`` (``--ntrain 5``, no chat format),
run through lm-evaluation-harness with task YAMLs generated at run time (see ``lmeval_tasks``).

Protocol reproduced:

- Data: ``<data_dir>/mmlu/dev/<subject>_dev.csv`` and ``<data_dir>/mmlu/test/<subject>_test.csv``
  (no header: question, A, B, C, D, answer letter), read with ``pandas.read_csv(header=None)`` like
  open-instruct, so its conversions are kept too (a cell reading ``None`` shows as ``nan``; this
  touches 10 cells of the real test set).
- Prompt: ``"The following are multiple choice questions (with answers) about {subject}.\\n\\n"``
  where ``{subject}`` is open-instruct's ``format_subject`` (each ``_``-separated word prefixed with a
  space, hence two spaces after "about"), then the first ``k`` dev examples, each
  ``"{question}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: {letter}\\n\\n"``, then the test question
  ending in ``"\\nAnswer:"``. No BOS unless the tokenizer adds one by default (lm_eval's
  ``add_bos_token=None`` = the tokenizer's default, as open-instruct's plain ``tokenizer(...)`` call).
- ``k`` starts at ``n_shot`` (5) and, per question, drops by one while the prompt is longer than
  ``max_prompt_tokens`` (2048) tokens. lm_eval has one shot count per task, so each subject becomes
  one task per distinct ``k`` (almost always a single task, ``k = 5``).
- Prediction: the letter whose continuation `` A``/`` B``/`` C``/`` D`` has the highest
  log-likelihood (lm_eval ``multiple_choice``; with single-token letters this is open-instruct's
  next-token comparison).
- Metric: accuracy over all questions pooled (open-instruct's "Average accuracy", i.e. weighted by
  subject size), in percent.
- ``limit`` is per subject and samples like open-instruct's ``--n_instances``:
  ``test_df.sample(limit, random_state=seed)``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from selectit.errors import InputError
from selectit.evaluation import lmeval_tasks as lt

LETTERS = ["A", "B", "C", "D"]
DEFAULTS: dict[str, Any] = {
    "limit": None,        # questions per subject; None/"all" = the whole test set
    "subjects": None,     # None = every subject with a test file
    "n_shot": 5,
    "batch_size": 8,
    "max_prompt_tokens": 2048,  # drop shots while a prompt is longer (open-instruct); 0 = never
    "save_prompts": False,  # per-question full prompts (~40 MB for the whole test set); one example per subject is always kept
}


def format_subject(subject: str) -> str:
    return "".join(" " + word for word in subject.split("_"))


def header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {format_subject(subject)}.\n\n"


def format_example(row: dict[str, Any], include_answer: bool = True) -> str:
    text = row["question"] + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, row["choices"]))
    text += "\nAnswer:"
    if include_answer:
        text += f" {row['answer']}\n\n"
    return text


def build_prompt(subject: str, dev_rows: list[dict[str, Any]], row: dict[str, Any], k: int) -> str:
    """The open-instruct prompt with ``k`` shots (what the generated lm_eval task produces)."""
    return header(subject) + "".join(format_example(r) for r in dev_rows[:k]) + format_example(row, False)


def list_subjects(data_dir: str | Path, wanted: list[str] | None = None) -> list[str]:
    test_dir = Path(data_dir) / "mmlu" / "test"
    if not test_dir.is_dir():
        raise InputError(f"{test_dir} does not exist: data_dir must hold mmlu/dev and mmlu/test")
    available = sorted(p.name[: -len("_test.csv")] for p in test_dir.glob("*_test.csv"))
    if not wanted:
        return available
    if isinstance(wanted, str):
        wanted = [wanted]
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise InputError(f"unknown MMLU subjects {unknown}; {test_dir} has {len(available)} subjects")
    return list(wanted)


def check_data(data_dir: str | Path, settings: dict | None = None) -> None:
    """InputError when ``data_dir`` lacks a test file, or (with shots) a dev file, of the subjects to run."""
    settings = settings or {}
    subjects = list_subjects(data_dir, settings.get("subjects"))
    if not subjects:
        raise InputError(f"{Path(data_dir) / 'mmlu' / 'test'} has no <subject>_test.csv file")
    if settings.get("n_shot", DEFAULTS["n_shot"]):
        missing = [s for s in subjects if not (Path(data_dir) / "mmlu" / "dev" / f"{s}_dev.csv").is_file()]
        if missing:
            raise InputError(f"{Path(data_dir) / 'mmlu' / 'dev'} has no dev file (the shots) for {missing[:5]}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def read_csv(path: Path, seed: int | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a Hendrycks-format CSV as dicts (idx, question, choices, answer letter)."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"MMLU file {path} is missing")
    df = pd.read_csv(path, header=None)
    if df.shape[1] != 6:
        raise InputError(f"{path}: expected 6 columns (question, A, B, C, D, answer), found {df.shape[1]}")
    if limit is not None and limit < len(df):
        df = df.sample(limit, random_state=seed)
    rows = []
    for idx, rec in zip(df.index, df.itertuples(index=False)):
        values = ["{}".format(v) for v in rec]
        if values[5] not in LETTERS:
            raise InputError(f"{path} row {idx}: answer must be one of A-D, found {values[5]!r}")
        rows.append({"idx": int(idx), "question": values[0], "choices": values[1:5], "answer": values[5]})
    return rows


def _doc(row: dict[str, Any], subject: str) -> dict[str, Any]:
    """cais/mmlu field schema (+ idx)."""
    return {"question": row["question"], "subject": subject, "choices": row["choices"],
            "answer": LETTERS.index(row["answer"]), "idx": row["idx"]}


def _shots_that_fit(tokenizer, subject, dev_rows, row, n_shot, max_tokens) -> int:
    k = n_shot
    if tokenizer is None or not max_tokens:
        return k
    while k > 0 and len(tokenizer(build_prompt(subject, dev_rows, row, k), add_special_tokens=False).input_ids) > max_tokens:
        k -= 1
    return k


def _task_config(name: str, subject: str, k: int, dev_file: str, test_file: str, cache: Path) -> dict[str, Any]:
    return {
        "task": name,
        **lt.json_dataset({"dev": dev_file, "test": test_file}, cache),
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": k,
        "output_type": "multiple_choice",
        "description": lt.jinja_literal(header(subject)),
        "doc_to_text": "{{question}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
        "doc_to_choice": LETTERS,
        "doc_to_target": "answer",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


def run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict:
    started = time.monotonic()
    s = lt.resolve_settings(DEFAULTS, settings)
    subjects = list_subjects(data_dir, s["subjects"])
    s["subjects"] = subjects
    tokenizer = None
    if s["max_prompt_tokens"]:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    root = Path(data_dir) / "mmlu"
    rows_by_task: dict[str, tuple[str, list[dict]]] = {}
    selected: dict[str, list[dict]] = {}
    with lt.Workdir() as wd:
        for subject in subjects:
            dev_rows = read_csv(root / "dev" / f"{subject}_dev.csv")[: s["n_shot"]]
            if len(dev_rows) < s["n_shot"]:
                raise InputError(f"{subject}: {s['n_shot']} shots asked for, the dev file has {len(dev_rows)} rows")
            test_rows = read_csv(root / "test" / f"{subject}_test.csv", seed=s["seed"], limit=s["limit"])
            selected[subject] = test_rows
            dev_file = lt.write_jsonl(wd.data / f"{subject}_dev.jsonl", [_doc(r, subject) for r in dev_rows])
            by_k: dict[int, list[dict]] = defaultdict(list)
            for row in test_rows:
                row["n_shot"] = _shots_that_fit(tokenizer, subject, dev_rows, row, s["n_shot"], s["max_prompt_tokens"])
                by_k[row["n_shot"]].append(row)
            for k, rows in sorted(by_k.items(), reverse=True):
                name = f"selectit_mmlu_{subject}_{k}shot"
                test_file = lt.write_jsonl(wd.data / f"{name}.jsonl", [_doc(r, subject) for r in rows])
                lt.write_task_yaml(wd.include, _task_config(name, subject, k, dev_file, test_file, wd.cache))
                rows_by_task[name] = (subject, rows)
        out = lt.evaluate_tasks(model_dir, wd.include, list(rows_by_task), s)

    found: dict[tuple[str, int], dict] = {}
    lm_eval_acc = []
    for name, (subject, rows) in rows_by_task.items():
        samples = out["samples"][name]
        if len(samples) != len(rows):
            raise RuntimeError(f"lm_eval returned {len(samples)} samples for {name}, expected {len(rows)}")
        for sample in samples:
            row = rows[sample["doc_id"]]
            if sample["doc"]["idx"] != row["idx"]:
                raise RuntimeError(f"lm_eval sample order mismatch in {name}")
            lls = [float(r[0]) for r in sample["filtered_resps"]]
            chosen = LETTERS[max(range(len(lls)), key=lambda i: lls[i])]
            found[(subject, row["idx"])] = {
                "id": f"{subject}/{row['idx']}", "subject": subject, "doc_index": row["idx"],
                "question": row["question"], "choices": row["choices"], "target": row["answer"],
                "chosen": chosen, "loglikelihoods": lls, "n_shot": row["n_shot"],
                "correct": chosen == row["answer"], "_prompt": lt.sample_context(sample),
            }
            if "acc" in sample:
                lm_eval_acc.append(float(sample["acc"]))

    predictions, per_subject, example_prompts = [], {}, {}
    for subject in subjects:
        preds = [found[(subject, row["idx"])] for row in selected[subject]]
        for p in preds:
            prompt = p.pop("_prompt")
            example_prompts.setdefault(subject, prompt)
            if s["save_prompts"]:
                p["prompt"] = prompt
        predictions.extend(preds)
        per_subject[subject] = {"n": len(preds), "accuracy": lt.percent([p["correct"] for p in preds])}
    if not predictions:
        raise InputError("no MMLU questions were selected")
    value = lt.percent([p["correct"] for p in predictions])
    return lt.finish(
        out_path, benchmark="mmlu", metric="accuracy", value=value, predictions=predictions, settings=s,
        started=started, model_dir=model_dir, data_dir=data_dir,
        protocol=f"open-instruct MMLU {s['n_shot']}-shot, next-letter log-likelihood, via lm_eval",
        per_subject=per_subject,
        n_shot_counts={str(k): sum(p["n_shot"] == k for p in predictions) for k in sorted({p["n_shot"] for p in predictions})},
        lm_eval_value=100.0 * sum(lm_eval_acc) / len(lm_eval_acc) if lm_eval_acc else None,
        runtime=out["runtime"], example_prompts=example_prompts,
    )
