"""Run one benchmark on one model: ``python -m selectit evaluate`` and the workflow's ``evaluate`` rule.

``evaluate`` imports the benchmark's module (its entry in the registry ``selectit.evaluation.BENCHMARKS``) and
calls its ``run(model_dir, data_dir, out_path, settings)``; it only sets up the CPU threads first
(``selectit.host.prepare_cpu_threads``, so a job keeps to the cores the scheduler gave it) and a check of the
settings' keys. ``check_settings``
runs the same key check without running anything, so the workflow rejects a typo in a benchmark's
settings when it parses the config, not after training; ``check_evaluation`` adds the data folder and the
AlpacaEval judge to it (and an unknown benchmark name before all). ``data_files`` lists the files of a benchmark
under ``data_dir`` (its registry entry's ``data_subdir``: the layout of the public data sets, as each module reads
them), for the workflow's inputs.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

from selectit.engines import DEFAULT as ENGINE_DEFAULT
from selectit.engines import ENGINES, check
from selectit.errors import InputError
from selectit.evaluation import BENCHMARKS, check_benchmarks
from selectit.host import prepare_cpu_threads
from selectit.training import read_settings_arg


def benchmark_module(benchmark: str):
    """The module that runs ``benchmark`` (InputError for a name outside ``BENCHMARKS``)."""
    if benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark {benchmark!r}; known: {sorted(BENCHMARKS)}")
    return importlib.import_module(BENCHMARKS[benchmark].module)


def known_settings(benchmark: str) -> set[str] | None:
    """Setting keys ``benchmark`` accepts (its module's DEFAULTS, plus the lm_eval common keys for the
    modules that run on lm-evaluation-harness); None when the module cannot be imported or declares none."""
    try:
        module = benchmark_module(benchmark)
    except ImportError:
        return None
    defaults = getattr(module, "DEFAULTS", None)
    if not isinstance(defaults, dict):
        return None
    # side effect: importing lmeval_tasks sets the HF offline mode (for every benchmark, as it always did);
    # deferred: textgen pulls in numpy, which `python -m selectit --help` (this module is its plugin) need not load
    from selectit.evaluation import lmeval_tasks
    from selectit.evaluation.textgen import ENGINE_DEFAULTS

    keys = set(defaults) | set(ENGINE_DEFAULTS)
    if BENCHMARKS[benchmark].lm_eval:
        keys |= set(lmeval_tasks.COMMON_DEFAULTS)
    return keys


def check_settings(benchmark: str, settings: dict[str, Any] | None) -> None:
    """InputError when ``settings`` has a key ``benchmark`` does not know (a typo would otherwise fail
    only when the job runs, after training)."""
    if settings is not None and not isinstance(settings, dict):
        raise InputError(f"evaluation settings of {benchmark} must be a mapping, got {type(settings).__name__}")
    known = known_settings(benchmark)
    unknown = sorted(set(settings or {}) - known) if known is not None else []
    if unknown:
        raise InputError(f"unknown {benchmark} setting(s) {unknown}; known: {sorted(known)}")


def check_evaluation(data_dir: str | Path, benchmarks: list[str], settings: dict[str, Any] | None,
                     key: str = "evaluation", data: bool = True) -> None:
    """Fail fast, before any job runs: InputError naming the config key (``evaluation.settings.<b>`` ...,
    ``evaluation.data_dir``, ``evaluation.settings.alpaca_eval.judge.model_dir`` ...) when an evaluation
    would stop later: an unknown benchmark (``evaluation.benchmarks``) or setting, a data folder that lacks a
    benchmark's files (each module's ``check_data``: the files its ``run`` reads), or an AlpacaEval judge that could not run (no
    model, no endpoint). ``key``: the config path of the evaluation section, for the messages. ``data=False``:
    the data files are yet to come (the workflow's download rule, selectit.resources, fetches them) and only
    the settings and the judge are checked."""
    check_benchmarks(benchmarks, f"config {key}.benchmarks")
    settings = settings or {}
    for benchmark in benchmarks:
        try:
            check_settings(benchmark, settings.get(benchmark))
        except InputError as exc:
            raise InputError(f"config {key}.settings.{benchmark}: {exc}") from None
    if data and not Path(data_dir).is_dir():
        raise InputError(f"config {key}.data_dir: {data_dir} does not exist (it must hold the benchmarks "
                         f"{', '.join(benchmarks)} in their public layout)")
    for benchmark in benchmarks:
        module = benchmark_module(benchmark)
        bench_settings = settings.get(benchmark) or {}
        try:
            if data:
                module.check_data(str(data_dir), bench_settings)
        except InputError as exc:
            raise InputError(f"config {key}.data_dir: {benchmark} cannot run: {exc}") from None
        check_judge = getattr(module, "check_judge", None)  # a benchmark with a judge (AlpacaEval)
        if check_judge is not None:
            check_judge(bench_settings.get("judge"), f"config {key}.settings.{benchmark}.judge")


def data_files(benchmark: str, data_dir: str | Path) -> list[str]:
    """Every file under ``data_dir``'s folder for ``benchmark`` (sorted; [] when it is missing)."""
    entry = BENCHMARKS.get(benchmark)
    folder = Path(data_dir) / entry.data_subdir if entry else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def evaluate(benchmark: str, model_dir: str | Path, data_dir: str | Path, out_path: str | Path,
             settings: dict[str, Any] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Run ``benchmark`` on ``model_dir``; the module writes ``out_path`` (its result JSON) and it is returned."""
    check_settings(benchmark, settings)
    module = benchmark_module(benchmark)
    if not Path(model_dir).is_dir():
        raise InputError(f"model folder {model_dir} does not exist")
    if not Path(data_dir).is_dir():
        raise InputError(f"evaluation data folder {data_dir} does not exist")
    prepare_cpu_threads(int(threads) if threads else None)  # before torch loads: OpenMP reads its settings once
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    return module.run(str(model_dir), str(data_dir), str(out_path), json.loads(json.dumps(settings or {})))


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline of a result record (what the CLI and the workflow log print)."""
    return {k: result.get(k) for k in ("benchmark", "metric", "value", "n", "wall_seconds")}


def run_cli(args: argparse.Namespace) -> None:
    settings = read_settings_arg(args.settings_json) or {}
    if args.engine != ENGINE_DEFAULT:
        check(args.engine, "--engine")
        settings = {**settings, "engine": args.engine}
    result = evaluate(args.benchmark, args.model, args.data_dir, args.out, settings, args.threads)
    print(json.dumps({**summary(result), "out": args.out}))


def register_cli(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand to an argparse subparsers object (sets ``func``)."""
    parser = subparsers.add_parser("evaluate", help="run one benchmark on one model and write its result JSON",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--model", required=True, help="model folder (HF format, e.g. a training output)")
    parser.add_argument("--data-dir", required=True,
                        help="folder holding the benchmark's data in the public layout (e.g. data/default/eval)")
    parser.add_argument("--out", required=True, help="result JSON to write")
    parser.add_argument("--settings-json", default=None,
                        help="benchmark settings: a JSON file or an inline JSON object (default: the paper's protocol)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--engine", default=ENGINE_DEFAULT, choices=list(ENGINES),
                        help="what runs the model (default %(default)s; vllm needs `make setup-vllm`)")
    parser.set_defaults(func=run_cli)
