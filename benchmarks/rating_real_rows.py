#!/usr/bin/env python
"""The headline rating benchmark: real rows, both real raters, one JSON per run in benchmarks/measured/.

The setting of issue 16: 130 samples (seed 0) of ``../shared/data/alpaca/alpaca_en_demo.json`` x the first 5 lines
of ``../shared/data/selectit/rating_prompt.txt`` (650 rows, about 210 tokens a row), 2 threads, for SmolLM2-135M and
Gemma-3-270M (the embedded default's raters, prepared from their PyPI packages into the benchmark's cache). It runs
``benchmarks/rating_throughput.py`` with those arguments, so the JSON holds everything that script writes: the CPU
model and whether it has AMX (``env.cpu_model``, ``env.cpu_amx``), the bf16 and fp32 matmul peaks measured in the
same run (``peaks_flops``), MFU-hw against the bf16 peak, the padding, the load average beside every variant, and
the agreement with the released loop, and the vLLM engine (``vllm:ours``, where ``make setup-vllm`` ran) against
both. The released loop rates the first ``--released-rows`` samples only (it is
slow: about 370 tok/s in fp32 on 2 cores), under the same 5 prompts.

    python benchmarks/rating_real_rows.py                    # both raters, ~10 min on a quiet 2-core CPU
    python benchmarks/rating_real_rows.py --model gemma3 --tag run2

Extra arguments after ``--`` go to rating_throughput.py (e.g. ``-- --progress``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

DATA = REPO / "../shared/data/alpaca/alpaca_en_demo.json"
PROMPTS = REPO / "../shared/data/selectit/rating_prompt.txt"
VARIANTS = "released:own,released:ours,ours:ours,vllm:ours"  # vllm: the vLLM engine, where make setup-vllm ran


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", choices=["smollm2", "gemma3"],
                   help="rater(s) to run (default: both, in one process and one JSON)")
    p.add_argument("--rows", type=int, default=130, help="samples (default: %(default)s, the issue's setting)")
    p.add_argument("--released-rows", type=int, default=20,
                   help="samples the released loop rates, x 5 prompts (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="(default: %(default)s)")
    p.add_argument("--variants", default=VARIANTS, help="see rating_throughput.py (default: %(default)s)")
    p.add_argument("--out-dir", default=str(HERE / "measured"), help="(default: %(default)s)")
    p.add_argument("--tag", default=None, help="appended to the file name (e.g. run2)")
    args = p.parse_args(argv)
    for path in (DATA, PROMPTS):
        if not path.is_file():
            raise SystemExit(f"{path} is missing: the real-rows benchmark reads the shared data folder")

    import rating_throughput as rt

    from selectit.engines.vllm import missing

    if missing() and args.variants == VARIANTS:
        print(f"note: no vLLM variant: {missing()}", flush=True)
        args.variants = ",".join(v for v in VARIANTS.split(",") if not v.startswith("vllm"))

    models = args.model or ["smollm2", "gemma3"]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selectit" / "benchmark_models"
    rt.prepare_default_models(cache)
    cpu = rt.cpu_info()
    machine = "amx" if cpu["cpu_amx"] else ("avx512bf16" if cpu["cpu_avx512_bf16"] else "cpu")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    name = f"rating_real_rows_{machine}_{'_'.join(models)}_{stamp}" + (f"_{args.tag}" if args.tag else "") + ".json"
    out = Path(args.out_dir) / name
    print(f"CPU: {cpu['cpu_model']} (AMX: {cpu['cpu_amx']}, AVX512-BF16: {cpu['cpu_avx512_bf16']}); "
          f"writing {out}", flush=True)
    cmd = [f"--model-dir={cache / m}" for m in models] + [
        "--data", str(DATA), "--prompts", str(PROMPTS), "--n-prompts", "5", "--rows", str(args.rows),
        "--released-rows", str(args.released_rows), "--threads", str(args.threads), "--variants", args.variants,
        "--out", str(out), *extra]
    return rt.main(cmd)


if __name__ == "__main__":
    sys.exit(main())
