"""Fail fast: the paper config's evaluation section, checked before any job runs, with one broken key at a
time; each error names the key. The data folder is the real public data in ../shared/data (symlinked, one
benchmark left out where the test needs a gap)."""

from __future__ import annotations

import copy
import importlib

import pytest
import yaml

from selectit.errors import InputError
from selectit.evaluation import BENCHMARKS, lmeval_tasks
from selectit.evaluation.cli import check_evaluation, known_settings
from selectit.schema import default as schema_default
from tests.conftest import REPO, SHARED

PAPER = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["evaluation"]
ALL = list(BENCHMARKS)
REAL = SHARED / "data"


def _data_dir(tmp_path, leave_out=()):
    root = tmp_path / "eval"
    root.mkdir()
    for sub in (b.data_subdir for b in BENCHMARKS.values()):
        if sub not in leave_out:
            (root / sub).symlink_to(REAL / sub)
    return root


def test_the_registry_agrees_with_the_modules_and_the_config_default():
    """Each entry's module imports, ``lm_eval`` is whether the module is built on lmeval_tasks (and so takes its
    common settings), and the config's default evaluates every benchmark."""
    assert list(BENCHMARKS) == ["mmlu", "bbh", "gsm", "tydiqa", "codex", "alpaca_eval"]  # the paper's columns
    assert sorted(schema_default("evaluation", "benchmarks")) == sorted(BENCHMARKS)
    for name, entry in BENCHMARKS.items():
        assert entry.name == name
        module = importlib.import_module(entry.module)
        assert entry.lm_eval == (getattr(module, "lt", None) is lmeval_tasks), name
        assert (set(lmeval_tasks.COMMON_DEFAULTS) <= known_settings(name)) == entry.lm_eval, name


@pytest.mark.parametrize("benchmarks, unknown", [(["gsm", "superni"], ["superni"]), (["GSM"], ["GSM"])])
def test_an_unknown_benchmark_names_evaluation_benchmarks_and_the_known_ones(tmp_path, benchmarks, unknown):
    """The schema lists no benchmark names: the registry is their one home, and an unknown one stops the config
    check (before its settings, its data or a judge are looked at) with the key and every known name."""
    known = r"\['alpaca_eval', 'bbh', 'codex', 'gsm', 'mmlu', 'tydiqa'\]"
    for data in (True, False):
        with pytest.raises(InputError, match=rf"^config evaluation.benchmarks: unknown benchmark\(s\) "
                                             rf"\[{unknown[0]!r}\]; known: {known}$"):
            check_evaluation(tmp_path / "absent", benchmarks, PAPER["settings"], data=data)


def test_the_paper_and_default_evaluations_pass(tmp_path):
    check_evaluation(_data_dir(tmp_path), ALL, PAPER["settings"])
    default = yaml.safe_load((REPO / "config.yaml").read_text())["evaluation"]
    check_evaluation(REPO / default["data_dir"], default["benchmarks"], default["settings"])


@pytest.mark.parametrize("broken, key", [
    (lambda s: s["alpaca_eval"].update(judge={"type": "hf"}), "evaluation.settings.alpaca_eval.judge.model_dir"),
    (lambda s: s["alpaca_eval"]["judge"].update(model=""), "evaluation.settings.alpaca_eval.judge.model"),
    (lambda s: s["alpaca_eval"]["judge"].update(type="claude"), "evaluation.settings.alpaca_eval.judge.type"),
    (lambda s: s["alpaca_eval"]["judge"].update(temperature=0), "evaluation.settings.alpaca_eval.judge"),
    (lambda s: s.update(gsm={"n_shots": 8}), "evaluation.settings.gsm"),
    (lambda s: s.update(bbh={"tasks": ["not_a_task"]}), "evaluation.data_dir: bbh"),
    (lambda s: s.update(mmlu={"subjects": ["astrology"]}), "evaluation.data_dir: mmlu"),
])
def test_one_broken_setting_names_its_key(tmp_path, broken, key):
    settings = copy.deepcopy(PAPER["settings"])
    broken(settings)
    with pytest.raises(InputError, match=f"^config {key}"):
        check_evaluation(_data_dir(tmp_path), ALL, settings)


@pytest.mark.parametrize("missing, benchmark, what", [
    ("humaneval", "codex", "HumanEval"), ("alpaca_eval", "alpaca_eval", "AlpacaEval reference"),
    ("tydiqa", "tydiqa", "TyDiQA GoldP dev"), ("gsm8k", "gsm", "gsm8k/test.jsonl"),
    ("bbh", "bbh", "bbh"), ("mmlu", "mmlu", "mmlu"),
])
def test_a_benchmark_missing_from_the_data_dir_names_the_data_dir(tmp_path, missing, benchmark, what):
    with pytest.raises(InputError, match=f"^config evaluation.data_dir: {benchmark} cannot run: .*{what}"):
        check_evaluation(_data_dir(tmp_path, leave_out=(missing,)), ALL, PAPER["settings"])
    # a benchmark that is not evaluated needs no data
    (tmp_path / "other").mkdir()
    check_evaluation(_data_dir(tmp_path / "other", leave_out=(missing,)), [b for b in ALL if b != benchmark],
                     PAPER["settings"])


def test_a_missing_data_dir_names_the_key(tmp_path):
    with pytest.raises(InputError, match=r"^config evaluation.data_dir: .*resources/eval does not exist"):
        check_evaluation(tmp_path / PAPER["data_dir"], ALL, PAPER["settings"])


def test_data_yet_to_be_downloaded_leaves_the_settings_and_the_judge_checked(tmp_path):
    """data=False (the workflow's download folder before its files are there): no data check, the rest as ever."""
    missing = tmp_path / PAPER["data_dir"]
    check_evaluation(missing, ALL, PAPER["settings"], data=False)
    settings = copy.deepcopy(PAPER["settings"])
    settings["alpaca_eval"]["judge"] = {"type": "hf"}
    with pytest.raises(InputError, match="^config evaluation.settings.alpaca_eval.judge.model_dir"):
        check_evaluation(missing, ALL, settings, data=False)
    with pytest.raises(InputError, match="^config evaluation.settings.gsm"):
        check_evaluation(missing, ALL, {**PAPER["settings"], "gsm": {"n_shots": 8}}, data=False)
