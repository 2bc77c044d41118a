#!/usr/bin/env python
"""Tensor-parallel rating check for a machine with several GPUs (benchmarks/gpu_check.sh runs it there).

A random-weight Llama (by default LLaMA-2-70B's layer shape, 64 query and 8 key-value heads, a few layers; seeded, so
the FLOPs of a real one) with the tokenizer of --tokenizer-dir is rated on one GPU and then tensor-parallel over
--gpus GPUs, both by ``selectit.rating.rate_shard_file`` as a rating job calls it (the second launches one torchrun
process per GPU). Writes to --out: the parallel mode each ran with, rows/s and tokens/s of each, the speed-up, the
largest logit difference and the overlap of the top 20 % by token score. A dry run on a CPU (gloo):
``python benchmarks/tp_check.py --device cpu --hidden 256 --heads 8 --kv-heads 4 --layers 2 --rows 32 ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer-dir", required=True, help="a folder with a tokenizer (e.g. gpu_models/gemma3)")
    parser.add_argument("--gpus", type=int, required=True, help="tensor-parallel processes (GPUs)")
    parser.add_argument("--work", default="/tmp/tp_check", help="where the random model and shards go")
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--intermediate", type=int, default=None, help="default 3.5 x hidden (LLaMA-2-70B)")
    parser.add_argument("--heads", type=int, default=64)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--token-budget", type=int, default=65536)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run")
    args = parser.parse_args()

    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selectit.data import normalise
    from selectit.models import MODEL_JSON
    from selectit.prompts import RatingPrompt
    from selectit.rating import rate_shard_file
    from selectit.scoring import select_top, token_level

    work = Path(args.work)
    folder = work / "model"
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_dir)
    if not (folder / MODEL_JSON).is_file():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                             intermediate_size=args.intermediate or int(3.5 * args.hidden),
                             num_hidden_layers=args.layers, num_attention_heads=args.heads,
                             num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                             bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
        torch.set_default_dtype(torch.bfloat16 if args.dtype == "bf16" else torch.float32)
        with torch.device(args.device):
            model = LlamaForCausalLM(config)
        torch.set_default_dtype(torch.float32)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / MODEL_JSON).write_text(json.dumps({"name": "tp-check", "fingerprint": "random-seed0",
                                                     "theta": int(model.num_parameters())}))
        del model
        if args.device == "cuda":
            torch.cuda.empty_cache()
    records = [{"instruction": f"Explain step {i} of the procedure in detail.", "input": "",
                "output": "The step is done as follows. " * (5 + i % 40)} for i in range(args.rows)]
    shard = normalise(records, "tp_check.json")[0]
    prompt = RatingPrompt("Rate the response from 1 to 5.\n", 1)
    result = {"gpus": args.gpus, "rows": args.rows, "shape": vars(args)}
    logits = {}
    # warm-up of the one-GPU case in this process (the tensor-parallel processes start cold: their time includes the
    # first collectives' set-up, so the speed-up is if anything understated)
    rate_shard_file(folder, shard.head(8), prompt, 5, 1024, work / "warmup.parquet", dtype=args.dtype, gpus=1)
    for name, gpus in (("one_gpu", 1), ("tensor_parallel", args.gpus)):
        env = os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        if gpus == 1 and args.device == "cuda":
            os.environ["CUDA_VISIBLE_DEVICES"] = (env or "0").split(",")[0]
        elif env is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = env
        start = time.perf_counter()
        try:
            stats = rate_shard_file(folder, shard, prompt, 5, 1024, work / f"{name}.parquet", dtype=args.dtype,
                                    token_budget=args.token_budget, gpus=gpus)
        except Exception as exc:  # noqa: BLE001 -- a failed case is reported, the other kept
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(result, indent=1), flush=True)
            continue
        keep = ("parallel", "parallel_why", "rows_per_s", "tokens_per_s", "seconds", "batches", "oom_splits",
                "prefix_rows", "devices", "processes", "dtype")
        result[name] = {**{k: stats.get(k) for k in keep}, "job_wall_s": round(time.perf_counter() - start, 2)}
        if args.device == "cuda":
            torch.cuda.empty_cache()  # this process's cache would crowd the first tensor-parallel process's GPU
        logits[name] = np.stack(pq.read_table(work / f"{name}.parquet").column("logits").to_pylist())
        print(json.dumps(result, indent=1), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    if len(logits) == 2:
        a, b = logits["one_gpu"], logits["tensor_parallel"]
        top_a, top_b = set(select_top(token_level(a), 0.2)), set(select_top(token_level(b), 0.2))
        result["max_abs_logit_diff"] = float(np.abs(a - b).max())
        result["top20_overlap"] = len(top_a & top_b) / max(len(top_a), 1)
        one, tp = result["one_gpu"]["tokens_per_s"], result["tensor_parallel"]["tokens_per_s"]
        result["speedup"] = tp / one if one and tp else None
        result["scaling_efficiency"] = result["speedup"] / args.gpus if result["speedup"] else None
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
