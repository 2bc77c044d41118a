"""Evaluation on the paper's six benchmarks. Each benchmark module exposes
``run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict``
which writes one JSON (metric, n, seed, package versions, per-example predictions) to ``out_path``
and returns it.

``BENCHMARKS`` is the registry, the one home of what the rest of the pipeline knows about a benchmark: its name
(in the config, the result file and the record), the module that runs it, its column label in the paper's tables,
the sub-folder of ``evaluation.data_dir`` it reads, whether it runs on lm-evaluation-harness, and the cost facts
that ``selectit.cost`` plans with. Its order is the paper's column order. Adding a benchmark is one module and one
entry here (and its files in ``selectit.resources`` for the download rule). This module imports nothing heavy: the
workflow reads it when it parses."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType

from selectit.errors import InputError


@dataclass(frozen=True)
class Benchmark:
    name: str  # config name (evaluation.benchmarks, evaluation.settings), result file {name}.json, record's benchmark
    module: str  # the module whose ``run`` evaluates it
    label: str  # its column in the paper's tables
    data_subdir: str  # the folder of evaluation.data_dir it reads (the public data set's layout)
    lm_eval: bool  # runs on lm-evaluation-harness (selectit.evaluation.lmeval_tasks' common settings apply)
    # Mean prompt tokens of one item as the module builds it under its DEFAULTS, measured on the public data
    # (../shared/data) with SmolLM2's tokenizer by benchmarks/eval_batches.py (a LLaMA-2 tokenizer gives somewhat
    # more): benchmarks/measured/eval_batches_20261206.json (TyDiQA: 9 examples only). MMLU: the 5-shot prompt
    # with its one-token answer, one forward per question.
    prompt_tokens: float
    # Items of its public data, taken whole where its ``limit`` is None (GSM: "all"): MMLU's test set, GSM8K's
    # test set, BBH's 27 tasks (250 examples each but three), TyDiQA GoldP's dev set (9 languages), HumanEval's
    # problems, AlpacaEval's instructions.
    full_items: int


BENCHMARKS: MappingProxyType[str, Benchmark] = MappingProxyType({b.name: b for b in (
    Benchmark("mmlu", "selectit.evaluation.mmlu", "MMLU", "mmlu", True, 706.0, 14042),
    Benchmark("bbh", "selectit.evaluation.bbh", "BBH", "bbh", True, 955.0, 6511),
    Benchmark("gsm", "selectit.evaluation.gsm", "GSM", "gsm8k", True, 809.0, 1319),
    Benchmark("tydiqa", "selectit.evaluation.tydiqa", "TyDiQA", "tydiqa", False, 818.0, 5077),
    Benchmark("codex", "selectit.evaluation.humaneval", "CodeX", "humaneval", False, 140.0, 164),
    Benchmark("alpaca_eval", "selectit.evaluation.alpacaeval", "AE", "alpaca_eval", False, 67.0, 805),
)})


def check_benchmarks(names: Iterable[str], key: str = "config evaluation.benchmarks") -> None:
    """InputError naming ``key`` (where the names come from) and the known names for a name outside ``BENCHMARKS``
    (the config schema lists no names: this is the check)."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise InputError(f"{key}: unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}")
