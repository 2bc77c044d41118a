"""Evaluation on the paper's six benchmarks. Each benchmark module exposes
``run(model_dir: str, data_dir: str, out_path: str, settings: dict) -> dict``
which writes one JSON (metric, n, seed, package versions, per-example predictions) to ``out_path``
and returns it. ``BENCHMARKS`` maps a benchmark name to its module."""

BENCHMARKS = {
    "mmlu": "selectit.evaluation.mmlu",
    "gsm": "selectit.evaluation.gsm",
    "bbh": "selectit.evaluation.bbh",
    "tydiqa": "selectit.evaluation.tydiqa",
    "codex": "selectit.evaluation.humaneval",
    "alpaca_eval": "selectit.evaluation.alpacaeval",
}
