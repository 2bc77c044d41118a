#!/usr/bin/env python
"""Rating throughput quiet vs beside one busy process (issue 16: a rating job on a shared machine).

Each trial is a fresh Python process that rates the real-rows setting's samples (``--rows`` of
``../shared/data/alpaca/alpaca_en_demo.json``, seed 0) under one released rating prompt with ``rate_shard`` as the
pipeline runs it (``prepare_cpu_threads`` first, so ``OMP_WAIT_POLICY=PASSIVE`` unless ``--wait-policy`` says
otherwise), after a short untimed warm-up. Trials alternate quiet / busy; a busy trial starts one process that
spins on one core (a Python ``while True`` loop) for the length of the trial. The JSON (``--out``) has every trial's
tokens/s, CPU seconds, the 1-minute load before and after, and the busy/quiet ratio of the medians.

    python benchmarks/rating_busy.py --model smollm2 --out benchmarks/measured/rating_busy_smollm2.json
    python benchmarks/rating_busy.py --model smollm2 --wait-policy ACTIVE   # the spinning OpenMP default, to compare
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATA = REPO / "../shared/data/alpaca/alpaca_en_demo.json"
PROMPTS = REPO / "../shared/data/selectit/rating_prompt.txt"

TRIAL = r"""
import json, os, random, sys, time
sys.path.insert(0, {repo!r})
from selectit.host import prepare_cpu_threads
cpu = prepare_cpu_threads({threads})
import torch
from selectit.data import normalise
from selectit.models import load_prepared
from selectit.prompts import load_prompts, select_prompts
from selectit.rating import rate_shard
model, tok = load_prepared({folder!r})
table, _ = normalise(json.loads(open({data!r}).read()), "alpaca_en_demo.json")
samples = table.iloc[random.Random(0).sample(range(len(table)), {rows})].reset_index(drop=True)
prompt = select_prompts(load_prompts({prompts!r}), 5)[{prompt}]
rate_shard(samples.iloc[:8], prompt, model, tok, 5, 1024, "m", progress=False)
print("READY", flush=True)
sys.stdin.readline()
c, w = time.process_time(), time.perf_counter()
_, stats = rate_shard(samples, prompt, model, tok, 5, 1024, "m", progress=False)
w, c = time.perf_counter() - w, time.process_time() - c
print("RESULT " + json.dumps({{"seconds": w, "cpu_seconds": c, "tokens": stats["tokens"],
      "padding_fraction": stats["padding_fraction"], "compiled": stats["compiled"], "dtype": str(model.dtype),
      "cpu_setup": cpu, "threads": torch.get_num_threads()}}), flush=True)
"""


def trial(args: argparse.Namespace, folder: Path, busy: bool) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if args.wait_policy:
        env["OMP_WAIT_POLICY"] = args.wait_policy
    code = TRIAL.format(repo=str(REPO), threads=args.threads, folder=str(folder), data=str(DATA), rows=args.rows,
                        prompts=str(PROMPTS), prompt=args.prompt)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    for line in proc.stdout:  # model loaded and warmed up, untimed
        if line.startswith("READY"):
            break
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    load0 = os.getloadavg()[0]
    try:
        proc.stdin.write("go\n")
        proc.stdin.flush()
        result = None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
        proc.wait()
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if result is None:
        raise SystemExit(f"trial failed (exit {proc.returncode})")
    result.update(busy=busy, load_start=round(load0, 2), load_end=round(os.getloadavg()[0], 2),
                  tokens_per_s=result["tokens"] / result["seconds"])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=["smollm2", "gemma3"])
    p.add_argument("--rows", type=int, default=130)
    p.add_argument("--prompt", type=int, default=0, help="which of the 5 prompts (0-based; default: %(default)s)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=2, help="quiet/busy pairs (default: %(default)s)")
    p.add_argument("--wait-policy", default=None, help="OMP_WAIT_POLICY for the rater (default: the rater's, PASSIVE)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    import rating_throughput as rt

    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selectit" / "benchmark_models"
    folder = rt.prepare_default_models(cache)[["smollm2", "gemma3"].index(args.model)]
    trials = []
    for i in range(args.pairs):
        for busy in (False, True):
            r = trial(args, folder, busy)
            trials.append(r)
            print(f"{'busy ' if busy else 'quiet'} {r['tokens_per_s']:7.0f} tok/s  {r['seconds']:6.1f} s  "
                  f"cpu {r['cpu_seconds']:6.1f} s  load {r['load_start']}->{r['load_end']}", flush=True)
    quiet = statistics.median(t["tokens_per_s"] for t in trials if not t["busy"])
    busy = statistics.median(t["tokens_per_s"] for t in trials if t["busy"])
    summary = {"model": args.model, "quiet_tokens_per_s": quiet, "busy_tokens_per_s": busy, "busy_over_quiet": busy / quiet,
               "wait_policy": args.wait_policy or "PASSIVE (rater default)", "threads": args.threads,
               "rows": args.rows, "prompt": args.prompt, **rt.cpu_info(), "cpu_count": os.cpu_count(),
               "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "argv": sys.argv[1:]}
    print(f"busy / quiet = {busy:.0f} / {quiet:.0f} = {busy / quiet:.1%}")
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "trials": trials}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
