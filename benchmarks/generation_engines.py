#!/usr/bin/env python
"""Generation: the HF engine against the vLLM engine on the same prompts, in one run, one JSON in
benchmarks/measured/.

The setting of issue 28: ``--questions`` GSM8K test questions of ``../shared/data/gsm8k`` (open-instruct's seeded
draw) with the 8 chain-of-thought exemplars as shots (``selectit.evaluation.gsm``'s prompt: 774-910 prompt
tokens each), greedy, at most ``--max-new-tokens`` new tokens, stop "\\n", SmolLM2-135M (the embedded default's
rater, prepared into the benchmark cache). The HF engine is ``selectit.evaluation.textgen.generate`` (static,
length-sorted, left-padded batches of ``--batch-size``); the vLLM engine is ``selectit.engines.vllm`` (continuous
batching, prefix caching; its worker's start, which happens on the first request, is timed apart: ``seconds`` is
generation alone, ``load_seconds`` the loading, ``speedup_with_load`` the ratio of both together). The CPU, its bf16 and fp32 matmul peaks (measured in the same
run), the agreement (identical completions, same extracted answer) and the load average go into the JSON.

    python benchmarks/generation_engines.py                      # fp32 and bf16, ~12 min on a quiet 2-core CPU
    python benchmarks/generation_engines.py --dtype fp32 --questions 10
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

DATA = REPO / "../shared/data"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="the HF engine's batch (default: %(default)s)")
    p.add_argument("--dtype", action="append", choices=["fp32", "bf16"], help="(default: both)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model-dir", default=None, help="a prepared model folder (default: SmolLM2 from its PyPI wheel)")
    p.add_argument("--data", default=str(DATA), help="a folder with gsm8k/test.jsonl (default: %(default)s)")
    p.add_argument("--device", default=None, help="the HF engine's device (default: cuda if there is one)")
    p.add_argument("--engines", default="hf,vllm", help="(default: %(default)s)")
    p.add_argument("--out", default=None, help="the JSON to write (default: in --out-dir, dated)")
    p.add_argument("--out-dir", default=str(HERE / "measured"))
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)

    from selectit.host import prepare_cpu_threads

    prepare_cpu_threads(args.threads)
    import rating_throughput as rt
    import torch

    from selectit.engines import open_engine
    from selectit.evaluation import answers, gsm

    if args.model_dir:
        folder = Path(args.model_dir)
    else:
        folder = rt.prepare_default_models(Path.home() / ".cache" / "selectit" / "benchmark_models")[0]  # smollm2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    test, shots = gsm.select(gsm.load_test(args.data), gsm.load_exemplars(), args.questions, 8, 42)
    prompts = [gsm.build_prompt(shots, q["question"]) for q in test]
    cpu = rt.cpu_info()
    peaks = {dn: rt.matmul_peak(rt.resolve_dtype(dn, device), device, 1024 if device == "cpu" else 8192, 10)
             for dn in ("bf16", "fp32")}
    print(f"CPU: {cpu['cpu_model']} (AMX {cpu['cpu_amx']}, AVX512-BF16 {cpu['cpu_avx512_bf16']}); matmul peaks "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    runs = {}
    for dtype in args.dtype or ["fp32", "bf16"]:
        got = {}
        for name in args.engines.split(","):
            start = time.perf_counter()
            engine = open_engine(name, folder, dtype=dtype, threads=args.threads, seed=0,
                                 **({"device": device} if name == "hf" else {}))
            loaded = time.perf_counter() - start
            load0 = rt.loadavg()
            start = time.perf_counter()
            texts = engine.generate(prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                    stop=["\n"])
            seconds = time.perf_counter() - start
            # the vLLM worker starts on the first request, inside generate: its start is reported apart
            started = float(engine.describe().get("start_seconds") or 0.0)
            engine.close()
            del engine
            # tokens of the completions as kept (cut at the stop), re-encoded: the same count for both engines' texts
            new_tokens = sum(len(folder_tok(folder)(t[0], add_special_tokens=False)["input_ids"]) for t in texts)
            seconds -= started
            got[name] = {"seconds": round(seconds, 2), "load_seconds": round(loaded + started, 1),
                         "new_tokens": new_tokens, "new_tokens_per_s": round(new_tokens / seconds, 1), "load_start": load0,
                         "load_end": rt.loadavg(), "texts": [t[0] for t in texts]}
            print(f"{dtype} {name}: {seconds:.1f} s generating ({loaded + started:.1f} s to load), {new_tokens} new tokens",
                  flush=True)
        if set(got) != {"hf", "vllm"}:
            runs[dtype] = got
            continue
        hf, vl = got["hf"]["texts"], got["vllm"]["texts"]
        runs[dtype] = {**got, "speedup": round(got["hf"]["seconds"] / got["vllm"]["seconds"], 2),
                       "speedup_with_load": round((got["hf"]["seconds"] + got["hf"]["load_seconds"])
                                                  / (got["vllm"]["seconds"] + got["vllm"]["load_seconds"]), 2),
                       "identical": sum(a == b for a, b in zip(hf, vl)),
                       "same_answer": sum(answers.extract_gsm_answer(a) == answers.extract_gsm_answer(b)
                                          for a, b in zip(hf, vl)), "n": len(prompts)}
        print(f"{dtype}: vLLM {runs[dtype]['speedup']}x ({runs[dtype]['speedup_with_load']}x with loading); identical {runs[dtype]['identical']}/{len(prompts)}, "
              f"same answer {runs[dtype]['same_answer']}/{len(prompts)}", flush=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    out = Path(args.out) if args.out else Path(args.out_dir) / (
        f"generation_engines_{stamp}" + (f"_{args.tag}" if args.tag else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"env": {**cpu, "torch": torch.__version__, "threads": args.threads, "device": device,
                                       "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None},
                               "peaks_flops": peaks, "settings": vars(args),
                               "prompt_tokens": [len(folder_tok(folder)(q)["input_ids"]) for q in prompts],
                               "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


_TOKENIZERS: dict = {}


def folder_tok(folder: Path):
    from transformers import AutoTokenizer

    if folder not in _TOKENIZERS:
        _TOKENIZERS[folder] = AutoTokenizer.from_pretrained(folder)
    return _TOKENIZERS[folder]


if __name__ == "__main__":
    sys.exit(main())
