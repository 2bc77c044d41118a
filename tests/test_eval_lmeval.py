"""MMLU / GSM8K / BBH through lm_eval: answer extraction on hand-made strings, prompt construction,
sampling, and end-to-end runs of each benchmark on a tiny random-weight model over the real data in
``shared/data`` (skipped when that folder is absent).

Scores are meaningless with random weights; what is checked is the plumbing: the result JSON's
schema, ``n``, that ``value`` is recomputable from the per-example predictions, and that the prompt
lm_eval actually built is the open-instruct prompt with the right number of shots.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from selectit.errors import InputError  # noqa: E402
from selectit.evaluation import answers, bbh, gsm, mmlu  # noqa: E402
from selectit.evaluation import lmeval_tasks as lt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CPU = {"device": "cpu", "dtype": "fp32", "batch_size": 4}


PROJECT_DATA = REPO / "data" / "default" / "eval"


def _has_layout(folder: Path) -> bool:
    return all((folder / sub).is_dir() for sub in ("mmlu", "gsm8k", "bbh"))


def _eval_data() -> Path | None:
    """The real public data (shared/data beside the repo) when present, else the project-written set
    (``SELECTIT_TEST_EVAL_DATA`` picks a folder explicitly)."""
    if os.environ.get("SELECTIT_TEST_EVAL_DATA"):
        return Path(os.environ["SELECTIT_TEST_EVAL_DATA"])
    for cand in (REPO.parent / "shared" / "data", Path("/work/shared/data"), PROJECT_DATA):
        if _has_layout(cand):
            return cand
    return None


DATA = _eval_data()
needs_data = pytest.mark.skipif(
    DATA is None, reason="no eval data: neither shared/data/{mmlu,gsm8k,bbh} nor data/default/eval is present")


# ------------------------------------------------------------------------------- answer extraction
def test_gsm_last_number_extraction():
    cot = "There are originally 3 cars. 2 more cars arrive. 3 + 2 = 5. So the answer is 5."
    assert answers.extract_gsm_answer(cot) == "5"
    assert answers.extract_gsm_answer(" She had 1,234,567 dollars, spent 1,000 and kept 1,233,567.") == "1233567"
    assert answers.extract_gsm_answer("The change is -3.5 degrees") == "-3.5"
    assert answers.extract_gsm_answer("about .5 of a pie") == ".5"
    # the *last* number wins, even in text the model ran on with
    assert answers.extract_gsm_answer("12 + 6 = 18. So the answer is 18.\nQuestion: 3 cats") == "3"
    # no number: the (comma-normalised) generation itself is the prediction
    assert answers.extract_gsm_answer(" I do not know") == " I do not know"
    assert answers.gsm_reference("Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 1,072") == "1072"
    with pytest.raises(ValueError):
        answers.gsm_reference("no marker 72")


def test_gsm_exact_match_normalisation():
    assert answers.exact_match("18", "18")
    assert not answers.exact_match("18.0", "18")
    assert answers.exact_match("-5", "5")  # punctuation removal drops the sign (evaluate's exact_match)
    assert not answers.exact_match(" 18", "18")  # whitespace is not stripped


def test_bbh_answer_extraction_and_exact_match():
    out = "Let's think step by step.\nA is first. So the answer is (A).\n\nQ: next"
    assert answers.extract_bbh_answer(out) == "(A)"
    assert answers.exact_match(answers.extract_bbh_answer(out), "(A)")
    # the first "the answer is", either case, up to the next period
    assert answers.extract_bbh_answer("the answer is True. Or the answer is False.") == "True"
    assert answers.extract_bbh_answer("So The answer is  valid .") == "valid"
    assert answers.extract_bbh_answer("So the answer is 3.5.") == "3"  # the protocol's regex stops at the first '.'
    assert answers.exact_match(answers.extract_bbh_answer("So the answer is TRUE."), "True")
    # no match: the stripped generation
    assert answers.extract_bbh_answer("  Yes\n") == "Yes"
    assert answers.exact_match(answers.extract_bbh_answer(" (B) \n"), "(B)")
    assert not answers.exact_match(answers.extract_bbh_answer("So the answer is (B)."), "(A)")
    assert answers.normalize_em("Hello, World!") == "hello world"


# ---------------------------------------------------------------------------- prompts and sampling
def test_settings_are_checked():
    with pytest.raises(InputError, match="unknown settings"):
        lt.resolve_settings(gsm.DEFAULTS, {"n_shots": 8})
    with pytest.raises(InputError, match="non-chat"):
        lt.resolve_settings(gsm.DEFAULTS, {"chat_format": "tulu"})
    s = lt.resolve_settings(gsm.DEFAULTS, {"limit": None, "n_shot": None})
    assert s["limit"] == 200 and s["n_shot"] == 8 and s["max_new_tokens"] == 512 and s["seed"] == 42
    assert lt.resolve_settings(bbh.DEFAULTS, {})["limit"] == 40
    assert lt.resolve_settings(mmlu.DEFAULTS, {"limit": None})["limit"] is None  # all of MMLU's test set
    assert lt.resolve_settings(gsm.DEFAULTS, {"limit": "all"})["limit"] is None
    with pytest.raises(InputError):
        lt.resolve_settings(gsm.DEFAULTS, {"limit": -3})


def test_gsm_exemplars_and_open_instruct_sampling():
    shots = gsm.load_exemplars()
    assert len(shots) == 8 and shots[0]["question"].startswith("There are 15 trees")
    assert all(s["cot_answer"].split(". ")[-1].startswith("So the answer is ") for s in shots)
    test = [{"idx": i} for i in range(1319)]
    picked, used = gsm.select(test, shots, 200, 8, 42)
    random.seed(42)  # what open-instruct does: seed once, then random.sample(test_data, 200)
    assert [r["idx"] for r in picked] == [r["idx"] for r in random.sample(test, 200)]
    assert used == shots
    picked, used = gsm.select(test, shots, 200, 3, 42)
    assert len(used) == 3 and all(u in shots for u in used)
    prompt = gsm.build_prompt(used, "  How many?  ")
    assert prompt.startswith("Answer the following questions.\n\nQuestion: ")
    assert prompt.endswith("\n\nQuestion: How many?\nAnswer:") and prompt.count("Question: ") == 4
    assert gsm.build_prompt([], "Q?") == "Answer the following question.\n\nQuestion: Q?\nAnswer:"


def test_bbh_prompt_split():
    text = "Task description.\n\nQ: one\nA: Let's think. So the answer is 1.\n\nQ: two\nA: x\n\ny. So the answer is 2."
    description, shots = bbh.split_prompt(text)
    assert description == "Task description." and len(shots) == 2 and shots[1].endswith("y. So the answer is 2.")
    assert bbh.few_shot_prefix(text, 2) == text
    assert bbh.few_shot_prefix(text, 1) == "Task description.\n\nQ: one\nA: Let's think. So the answer is 1."
    assert bbh.build_prompt("P", "in") == "P\n\nQ: in\nA:"


@needs_data
def test_bbh_prompt_files_have_three_shots():
    for task in bbh.list_tasks(DATA):
        prompt = bbh.read_prompt(DATA / "bbh" / "cot-prompts" / f"{task}.txt")
        description, shots = bbh.split_prompt(prompt)
        assert len(shots) == 3 and all("the answer is" in s for s in shots), task
        assert not prompt.startswith("BENCHMARK DATA") and "-----" not in prompt.splitlines()[0]


@needs_data
def test_mmlu_prompt_shrinks_to_fit(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    subject = "high_school_european_history" if (DATA / "mmlu" / "test" / "high_school_european_history_test.csv").is_file() \
        else mmlu.list_subjects(DATA)[0]
    dev = mmlu.read_csv(DATA / "mmlu" / "dev" / f"{subject}_dev.csv")
    row = mmlu.read_csv(DATA / "mmlu" / "test" / f"{subject}_test.csv")[0]
    full = len(tok(mmlu.build_prompt(subject, dev, row, 5), add_special_tokens=False).input_ids)
    k = mmlu._shots_that_fit(tok, subject, dev, row, 5, full - 1)
    assert k < 5
    assert len(tok(mmlu.build_prompt(subject, dev, row, k), add_special_tokens=False).input_ids) <= full - 1
    assert mmlu._shots_that_fit(tok, subject, dev, row, 5, full) == 5
    assert mmlu.header("abstract_algebra") == (
        "The following are multiple choice questions (with answers) about  abstract algebra.\n\n")


# ------------------------------------------------------------------------------------- end to end
REQUIRED = {"benchmark", "metric", "value", "unit", "n", "seed", "settings", "versions", "wall_seconds",
            "predictions"}


def _check_record(result: dict, out: Path, benchmark: str, n: int) -> None:
    assert REQUIRED <= set(result)
    assert result["benchmark"] == benchmark and result["unit"] == "percent"
    assert result["n"] == n == len(result["predictions"])
    assert result["seed"] == 42 and result["settings"]["seed"] == 42
    assert {"torch", "transformers", "lm_eval"} <= set(result["versions"])
    assert all(result["versions"][k] for k in ("torch", "transformers", "lm_eval"))
    assert result["wall_seconds"] > 0
    assert 0.0 <= result["value"] <= 100.0
    assert result["runtime"]["device"] == "cpu" and result["runtime"]["dtype"] == "float32"
    for p in result["predictions"]:
        assert {"id", "target", "correct"} <= set(p) and isinstance(p["correct"], bool)
        assert "prompt" in p or "question" in p
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert [f.name for f in out.parent.iterdir()] == [out.name]  # no temp file left behind


def _pct(preds) -> float:
    return 100.0 * sum(p["correct"] for p in preds) / len(preds)


@needs_data
def test_mmlu_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "mmlu" / "result.json"
    subjects = mmlu.list_subjects(DATA)[:2]  # abstract_algebra, anatomy in the real data
    result = mmlu.run(str(tiny_model_dir), str(DATA), str(out),
                      {**CPU, "subjects": subjects, "limit": 3, "save_prompts": True})
    _check_record(result, out, "mmlu", 6)
    preds = result["predictions"]
    assert result["value"] == pytest.approx(_pct(preds))
    assert result["lm_eval_value"] == pytest.approx(result["value"])  # lm_eval's own acc agrees
    for subject in subjects:
        dev = mmlu.read_csv(DATA / "mmlu" / "dev" / f"{subject}_dev.csv")
        rows = mmlu.read_csv(DATA / "mmlu" / "test" / f"{subject}_test.csv", seed=42, limit=3)
        mine = [p for p in preds if p["subject"] == subject]
        assert [p["doc_index"] for p in mine] == [r["idx"] for r in rows]  # pandas .sample(3, random_state=42)
        for p, row in zip(mine, rows):
            assert p["n_shot"] == 5
            assert p["prompt"] == mmlu.build_prompt(subject, dev, row, 5)
            assert p["prompt"].count("\nAnswer:") == 6 and p["prompt"].count("\nAnswer: ") == 5  # 5 shots + question
            assert p["chosen"] in "ABCD" and p["correct"] == (p["chosen"] == p["target"])
            assert len(p["loglikelihoods"]) == 4
            assert "ABCD"[max(range(4), key=lambda i: p["loglikelihoods"][i])] == p["chosen"]
        assert result["example_prompts"][subject] == mine[0]["prompt"]
        assert result["per_subject"][subject]["n"] == 3


@needs_data
def test_gsm_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "gsm" / "result.json"
    result = gsm.run(str(tiny_model_dir), str(DATA), str(out), {**CPU, "limit": 4, "max_new_tokens": 8})
    _check_record(result, out, "gsm", 4)
    preds = result["predictions"]
    assert result["value"] == pytest.approx(_pct(preds))
    test = gsm.load_test(DATA)
    expected = random.Random(42).sample(test, 4)
    assert [p["id"] for p in preds] == [r["idx"] for r in expected]
    shots = gsm.load_exemplars()
    for p, row in zip(preds, expected):
        assert p["prompt"] == gsm.build_prompt(shots, row["question"])
        assert p["prompt"].count("\nAnswer: ") == 8 and p["prompt"].count("Question: ") == 9  # 8 shots + question
        assert p["target"] == answers.gsm_reference(row["answer"])
        assert p["prediction"] == answers.extract_gsm_answer(p["generation"])
        assert p["correct"] == answers.exact_match(p["prediction"], p["target"])
        assert "\n" not in p["generation"]  # stopped at the first newline


@needs_data
def test_bbh_end_to_end(tiny_model_dir, tmp_path):
    out = tmp_path / "bbh" / "result.json"
    tasks = ["boolean_expressions", "word_sorting"]
    result = bbh.run(str(tiny_model_dir), str(DATA), str(out), {**CPU, "tasks": tasks, "limit": 2, "max_new_tokens": 8})
    _check_record(result, out, "bbh", 4)
    preds = result["predictions"]
    assert result["value"] == pytest.approx(_pct(preds)) == pytest.approx(result["value_pooled"])
    chosen = bbh.select(DATA, tasks, 2, 42)
    for task in tasks:
        prefix = bbh.read_prompt(DATA / "bbh" / "cot-prompts" / f"{task}.txt")
        mine = [p for p in preds if p["task"] == task]
        assert [p["doc_index"] for p in mine] == [r["idx"] for r in chosen[task]]
        assert result["per_task"][task]["n"] == 2
        for p, row in zip(mine, chosen[task]):
            assert p["prompt"] == bbh.build_prompt(prefix, row["input"])
            assert p["prompt"].count("\n\nQ: ") == 4 and p["prompt"].endswith("\nA:")  # 3 shots + question
            assert p["prediction"] == answers.extract_bbh_answer(p["generation"])
            assert p["correct"] == answers.exact_match(p["prediction"], p["target"])
            assert "\n\n" not in p["generation"]
    # a task's examples do not depend on which other tasks run
    assert bbh.select(DATA, ["word_sorting"], 2, 42)["word_sorting"] == chosen["word_sorting"]


@pytest.mark.skipif(not _has_layout(PROJECT_DATA), reason="data/default/eval not present")
def test_project_eval_set_loads():
    """The project-written default set follows the real layouts closely enough for every loader."""
    subjects = mmlu.list_subjects(PROJECT_DATA)
    assert subjects
    for subject in subjects:
        assert len(mmlu.read_csv(PROJECT_DATA / "mmlu" / "dev" / f"{subject}_dev.csv")) >= 5
        assert mmlu.read_csv(PROJECT_DATA / "mmlu" / "test" / f"{subject}_test.csv")
    test = gsm.load_test(PROJECT_DATA)
    assert test and all(float(r["reference"]) == float(r["reference"]) for r in test)
    tasks = bbh.list_tasks(PROJECT_DATA)
    chosen = bbh.select(PROJECT_DATA, tasks, 40, 42)
    for task in tasks:
        _, shots = bbh.split_prompt(bbh.read_prompt(PROJECT_DATA / "bbh" / "cot-prompts" / f"{task}.txt"))
        assert len(shots) == 3 and chosen[task]
