"""Rating jobs: a shard rated under one prompt by one model (``rate_shard``), and the job around it
(``rate_shard_file``: load the model with its engine, split or shard it across GPUs, write the rating shard and its
stats).

For each (sample, prompt) row it stores ``id``, ``prompt_id``, the K score-token ``logits`` (float32),
``score_mass`` (full-vocabulary probability on the K tokens), ``n_tokens`` and ``truncated``. The rows are encoded by
``selectit.prompts.encode_row`` (middle truncation) and scored by an engine (``selectit.engines``); the HF engine's
batched last-position forward is ``selectit.engines.hf_rater.Rater``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from selectit.atomic import write_parquet_atomic
from selectit.engines import open_engine
from selectit.engines.base import Engine
from selectit.engines.hf import HFEngine
from selectit.errors import SelectITError
from selectit.host import prepare_cpu_threads
from selectit.launch import child_env, rank, run_launched, torchrun_command, under_torchrun
from selectit.models import TENSOR_PARALLEL, load_prepared, parallel_mode, parse_dtype, read_model_info
from selectit.prompts import EncodedRow, RatingPrompt, build_rating_prompt, encode_row, prompt_head, score_token_ids

RATING_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("prompt_id", pa.string()),
    ("logits", pa.list_(pa.float32())),
    ("score_mass", pa.float32()),
    ("n_tokens", pa.int32()),
    ("truncated", pa.bool_()),
])


def rate_shard(shard: pd.DataFrame, prompt: RatingPrompt, model: Any, tokenizer: Any, k: int,
               max_length: int, model_name: str = "model", token_budget: int = 8192,
               progress: bool = True, *, prefix_cache: bool = True, compile: bool | None = None,
               max_rows: int = 256) -> tuple[pa.Table, dict[str, Any]]:
    """Rate every sample of a shard under one prompt; rows keep the shard's order. ``model``: a loaded HF model
    (run by the HF engine), or any ``selectit.engines.base.Engine`` (then ``tokenizer`` is its tokenizer).

    prefix_cache: compute the keys and values of the rating-prompt head (``prompt_head``) once and reuse them for
    every row whose tokens start with exactly the head's tokens (see ``selectit.engines.hf_rater.Rater``). compile:
    see ``Rater``. max_rows: most rows in one batch."""
    start = time.perf_counter()
    pairs = list(zip(shard["instruction"], shard["response"]))
    # one batched call (a fast tokenizer encodes the list in parallel, with the same ids as one by one);
    # rows over max_length are re-encoded piece by piece by encode_row to cut their middle
    whole = tokenizer([build_rating_prompt(prompt.text, i, r) for i, r in pairs])["input_ids"] if pairs else []
    encoded = []
    for pos, ((instruction, response), ids) in enumerate(zip(pairs, whole)):
        truncated = False
        if len(ids) > max_length:
            ids, truncated = encode_row(tokenizer, prompt, instruction, response, max_length)
        encoded.append(EncodedRow(pos, list(ids), truncated))
    encode_seconds = time.perf_counter() - start
    prefix = tokenizer(prompt_head(prompt.text))["input_ids"] if prefix_cache else None
    engine = model if isinstance(model, Engine) else HFEngine(model, tokenizer, model_name)
    score_ids = score_token_ids(tokenizer, k, model_name)
    logits, mass, stats = engine.score(encoded, list(shard["id"]), score_ids, prefix_ids=prefix,
                                       token_budget=token_budget, max_rows=max_rows, progress=progress,
                                       compile=compile)
    table = pa.table({
        "id": pa.array(shard["id"].tolist(), pa.string()),
        "prompt_id": pa.array([prompt.id] * len(shard), pa.string()),
        "logits": pa.array(list(logits), pa.list_(pa.float32())),
        "score_mass": pa.array(mass, pa.float32()),
        "n_tokens": pa.array([len(e.input_ids) for e in encoded], pa.int32()),
        "truncated": pa.array([e.truncated for e in encoded], pa.bool_()),
    }, schema=RATING_SCHEMA)
    stats["score_token_ids"] = score_ids
    stats["truncated_rows"] = int(sum(e.truncated for e in encoded))
    stats["encode_seconds"] = round(encode_seconds, 3)
    return table, stats


def rate_shard_file(model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt, k: int,
                    max_length: int, out_path: str | Path, dtype: str | None = "auto", token_budget: int = 8192,
                    threads: int | None = None, stats_path: str | Path | None = None,
                    model_name: str | None = None, gpus: int = 1, engine: str = "hf") -> dict[str, Any]:
    """Rate one shard (a Parquet file or a table) under one prompt with one prepared model; write the
    rating shard atomically. ``engine``: ``hf`` (this process, below) or another of ``selectit.engines.ENGINES``
    (``rate_with_engine``). ``gpus`` > 1 (``selectit.models.parallel_mode``): where the architecture has a
    tensor-parallel plan, this job launches ``gpus`` torchrun processes (``rate_tensor_parallel``), one per GPU, each
    holding 1/gpus of every layer, and the first of them writes the shard; otherwise the layers are split across the
    GPUs (``load_prepared``). The log, the stats and the shard's metadata (``parallel``) say which ran."""
    cpu = prepare_cpu_threads(threads)  # before torch is first imported in a rating job's process
    if engine != "hf":
        return rate_with_engine(engine, model_dir, shard, prompt, k, max_length, out_path, dtype, token_budget,
                                stats_path, model_name, gpus, cpu)

    mode, why = parallel_mode(model_dir, gpus)
    if mode == TENSOR_PARALLEL and not under_torchrun():
        print(f"rating on {gpus} GPUs: {why}", flush=True)
        return rate_tensor_parallel(model_dir, shard, prompt, k, max_length, out_path, dtype, token_budget,
                                    cpu["threads"], stats_path, model_name, gpus, why)
    if gpus > 1:
        print(f"rating on {gpus} GPUs: {why}", flush=True)
    return _rate_loaded(model_dir, shard, prompt, k, max_length, out_path, dtype, token_budget, stats_path,
                        model_name, gpus, mode, why, cpu)


def _rate_loaded(model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt, k: int,
                 max_length: int, out_path: str | Path, dtype: str | None, token_budget: int,
                 stats_path: str | Path | None, model_name: str | None, gpus: int, mode: str, why: str,
                 cpu: dict[str, Any]) -> dict[str, Any]:
    """Load the model in this process (whole, split, or this process's part of a tensor-parallel model), rate, and
    write the shard (in tensor parallel only the first process writes it and the stats)."""
    tensor_parallel = mode == TENSOR_PARALLEL
    info = read_model_info(model_dir)
    name = model_name or info["name"]
    model, tokenizer = load_prepared(model_dir, dtype=parse_dtype(dtype), gpus=gpus, tensor_parallel=tensor_parallel)
    table, stats = rate_shard(_shard_frame(shard), prompt, model, tokenizer, k, max_length, name, token_budget,
                              progress=rank() == 0)  # one progress bar in the log
    processes = gpus if tensor_parallel else 1
    # where it ran: on Slurm the job id and the GPUs the allocation gave it; every process of a tensor-parallel run
    where = {"rank": rank(), "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
             "local_rank": os.environ.get("LOCAL_RANK"), "devices": sorted({str(p.device) for p in model.parameters()}),
             "layer_share": _layer_share(model)}
    processes_seen = [where]
    if tensor_parallel:
        import torch.distributed as dist  # heavy: imports torch

        processes_seen = [None] * dist.get_world_size()
        dist.all_gather_object(processes_seen, where)
    ran = {"parallel_why": why, "processes": processes_seen, "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "devices": sorted({d for w in processes_seen for d in w["devices"]})}
    return _write_rated(table, stats, out_path, stats_path, name=name, info=info, prompt=prompt, k=k,
                        max_length=max_length, dtype=str(model.dtype), engine=None,
                        parallel={"mode": mode, "gpus": gpus, "processes": processes}, ran=ran, cpu=cpu,
                        write=rank() == 0)


def rate_with_engine(engine: str, model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt,
                     k: int, max_length: int, out_path: str | Path, dtype: str | None, token_budget: int,
                     stats_path: str | Path | None, model_name: str | None, gpus: int,
                     cpu: dict[str, Any]) -> dict[str, Any]:
    """Rate a shard with an engine that runs the model itself (vLLM: its own tensor parallelism over ``gpus``);
    the shard's metadata and the stats name the engine."""
    info = read_model_info(model_dir)
    name = model_name or info["name"]
    shard = _shard_frame(shard)
    with open_engine(engine, model_dir, dtype=dtype, threads=cpu["threads"], gpus=gpus, model_name=name,
                     max_model_len=max_length + 1) as runner:
        table, stats = rate_shard(shard, prompt, runner, runner.tokenizer, k, max_length, name, token_budget)
        described = runner.describe()
    ran = {"engine_info": described, "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    return _write_rated(table, stats, out_path, stats_path, name=name, info=info, prompt=prompt, k=k,
                        max_length=max_length, dtype=described["dtype"], engine=engine,
                        parallel={"mode": engine, "gpus": gpus, "processes": 1}, ran=ran, cpu=cpu)


def _shard_frame(shard: str | Path | pd.DataFrame) -> pd.DataFrame:
    """The shard's rows: the table given, or the Parquet file read."""
    return shard if isinstance(shard, pd.DataFrame) else pq.read_table(shard).to_pandas()


def _write_rated(table: pa.Table, stats: dict[str, Any], out_path: str | Path, stats_path: str | Path | None, *,
                 name: str, info: dict[str, Any], prompt: RatingPrompt, k: int, max_length: int, dtype: str,
                 engine: str | None, parallel: dict[str, Any], ran: dict[str, Any], cpu: dict[str, Any],
                 write: bool = True) -> dict[str, Any]:
    """The end of a rating job, whichever ran it (``_rate_loaded``, ``rate_with_engine``): the shard's metadata
    (``engine`` only for an engine that runs the model itself, so the HF shards keep the metadata they had before
    engines were a choice), the shard written atomically, and the stats (the run's, the metadata, ``ran``: how and
    where it ran, then ``cpu``) written to ``stats_path``. ``write``: whether this process writes them (in tensor
    parallel only the first). Returns the stats."""
    meta = {"model": name, "model_fingerprint": info["fingerprint"], "prompt_id": prompt.id, "k": k,
            "max_length": max_length, "dtype": dtype, "score_token_ids": stats["score_token_ids"]}
    if engine is not None:
        meta["engine"] = engine
    meta["parallel"] = parallel
    if write:
        write_parquet_atomic(table, out_path, meta)
    stats.update(meta)
    stats.update(ran)
    stats.update(cpu)
    if stats_path and write:
        Path(stats_path).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def _layer_share(model: Any) -> float | None:
    """The share of the first decoder layer's parameters this process holds (1.0 unless sharded by tensor
    parallelism, where it is about 1/processes: the norms are held whole)."""
    try:
        layer = model.get_decoder().layers[0]
    except (AttributeError, IndexError, TypeError):
        return None
    params = list(layer.parameters())
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    return round(local / max(sum(p.numel() for p in params), 1), 4)


TENSOR_PARALLEL_WORKER = "selectit.rating_tp"  # the module each process of a tensor-parallel rating runs


def rate_tensor_parallel(model_dir: str | Path, shard: str | Path | pd.DataFrame, prompt: RatingPrompt, k: int,
                         max_length: int, out_path: str | Path, dtype: str | None, token_budget: int, threads: int,
                         stats_path: str | Path | None, model_name: str | None, gpus: int, why: str,
                         worker: str = TENSOR_PARALLEL_WORKER) -> dict[str, Any]:
    """Rate a shard with ``gpus`` torchrun processes (``selectit.launch``) of ``worker``, which hold 1/gpus of each
    layer each: they get the job's shard and settings through a job file in a temporary folder beside ``out_path``,
    share the job's ``threads`` CPU threads, and inherit its GPUs (``CUDA_VISIBLE_DEVICES``: Slurm's allocation, or
    the GPUs a local run locked for the job); the first writes the shard and its stats. Returns the stats."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_path.name}.tp-", dir=out_path.parent) as tmp:
        if isinstance(shard, pd.DataFrame):
            shard_path = Path(tmp) / "shard.parquet"
            pq.write_table(pa.Table.from_pandas(shard, preserve_index=False), shard_path)
        else:
            shard_path = Path(shard)
        job = {"model_dir": str(model_dir), "shard": str(shard_path), "prompt_text": prompt.text,
               "prompt_position": prompt.position, "k": k, "max_length": max_length, "out_path": str(out_path),
               "dtype": dtype, "token_budget": token_budget, "threads": max(1, threads // gpus),
               "stats_path": str(Path(tmp) / "stats.json"), "model_name": model_name, "gpus": gpus, "why": why}
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        cmd = torchrun_command(gpus, worker, [str(job_path)])
        print("launching:", " ".join(cmd), flush=True)
        status = run_launched(cmd, child_env(job["threads"]))
        if status:
            raise SelectITError(f"tensor-parallel rating ({gpus} processes) exited with status {status}; the "
                                "processes' output is in this job's log")
        stats = json.loads(Path(job["stats_path"]).read_text())
    if stats_path:
        Path(stats_path).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def tensor_parallel_worker(job_path: str | Path) -> dict[str, Any]:
    """One process of ``rate_tensor_parallel`` (under torchrun): rate the job file's shard with this process's part
    of the model."""
    job = json.loads(Path(job_path).read_text())
    cpu = prepare_cpu_threads(job["threads"])  # before torch is imported

    try:
        return _rate_loaded(job["model_dir"], job["shard"], RatingPrompt(job["prompt_text"], job["prompt_position"]),
                            job["k"], job["max_length"], job["out_path"], job["dtype"], job["token_budget"],
                            job["stats_path"], job["model_name"], job["gpus"], TENSOR_PARALLEL, job["why"], cpu)
    finally:
        import torch.distributed as dist  # heavy: imports torch

        if dist.is_initialized():
            dist.destroy_process_group()
