"""The paper run's GPU bill, planned before anything runs: GPU-hours per stage and per job kind of a config.

Every job's work is counted in tokens and turned into FLOPs, then into GPU-hours at a stated share of one GPU's
peak (the MFU, a setting):

- **forward** passes (rating, IFD, a local judge's scoring, MMLU's log-likelihoods, every prompt that a generation
  reads): 2 θ FLOPs per token;
- **generation** (the judge's and the benchmarks' new tokens): 2 θ per generated token, at the ``generation`` MFU:
  decoding a batch of a few rows reads all weights for one token per row, so it runs far below the peak;
- **training**: 6 θ per token the model runs over (forward and backward) x epochs; with the padded collator the
  model also runs over the padding: tokens / (1 - padded share), where the padded share of random micro-batches of
  the per-device batch size comes from ``paper.cost.padded_share`` (measured on real records); packed: none.

Token counts come from the config: records per dataset (a local file is counted; a Hub dataset's size is
``paper.cost.records``), tokens of one rating row (``tokens_per_row``; else measured by the caller on rating
shards; else ``tokens_per_record``, which it about equals) and of one training example
(``tokens_per_record``), the benchmarks' protocols (items, shots, samples, budgets: their modules' ``DEFAULTS``
under ``evaluation.settings``) with prompt lengths measured on their public data (``EVAL_PROMPT_TOKENS``).
Generation is planned at its budget (``max_new_tokens`` for every row): an upper bound, which static batches
approach (a batch runs until its longest row ends).

The jobs are the config's own, those of ``snakemake all tables/all figures/all``: rating every dataset with every
rater under every prompt; IFD and the judge where a method of ``selection``, ``training`` or (with training
bases) ``paper`` uses them; fine-tuning and evaluating every run of ``training`` (bases x datasets x methods x
proportions x seeds) and of the paper's tables and figures (``selectit.paper.plan.all_runs``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from selectit import methods, schema
from selectit.atomic import write_text_atomic
from selectit.data import read_records
from selectit.errors import InputError
from selectit.evaluation import BENCHMARKS
from selectit.evaluation.cli import benchmark_module
from selectit.models import LAYER_SPLIT, ONE_DEVICE, TENSOR_PARALLEL, parallel_mode, rater_gpus
from selectit.paper.plan import DEFAULTS as PAPER_DEFAULTS
from selectit.paper.plan import TENSOR_PARALLEL_EFFICIENCY, all_runs
from selectit.training import base_settings, resolve_settings

#: The MFU of each job kind where paper.cost.mfu does not set it (its other defaults: selectit.paper.plan.DEFAULTS).
MFU = {"forward": 0.4, "training": 0.4, "generation": 0.05}

#: Mean prompt tokens of one item of each benchmark, and the items of its public data taken whole: the registry's
#: measured ``prompt_tokens`` and ``full_items`` (selectit.evaluation.BENCHMARKS says where they come from).
EVAL_PROMPT_TOKENS = {name: b.prompt_tokens for name, b in BENCHMARKS.items()}
EVAL_FULL_ITEMS = {name: b.full_items for name, b in BENCHMARKS.items()}
BBH_TASKS, TYDIQA_LANGUAGES, MMLU_SUBJECTS = 27, 9, 57
JUDGE_PROMPT_TOKENS = 150.0  # the AlpaGasus rating prompt around a record (selectit.judge), about
JUDGE_NEW_TOKENS = 8  # "Score: 4.5" and a little

STAGE_LABELS = {"rating": "rating", "ifd": "IFD", "judge": "judge", "training": "fine-tuning",
                "evaluation": "evaluation"}
COLUMNS = ["Stage", "Job kind", "Jobs", "Tokens", "FLOPs", "MFU", "GPU-hours", "GPU-hours (padded)",
           "GPU-hours (packed)"]


def _cost(config: dict) -> dict[str, Any]:
    cost = {**PAPER_DEFAULTS["cost"], **((config.get("paper") or {}).get("cost") or {})}
    cost["mfu"] = {**MFU, **(cost.get("mfu") or {})}
    unknown = sorted(set(cost["mfu"]) - set(MFU))
    if unknown:
        raise InputError(f"config paper.cost.mfu: unknown job kinds {unknown}; known: {sorted(MFU)}")
    return cost


def _default(*keys: str):
    return schema.default(*keys)


def dataset_records(config: dict, cost: dict, root: str | Path = ".") -> dict[str, int]:
    """Records of every dataset: paper.cost.records, else the local file counted."""
    out = {}
    for name, spec in config["datasets"].items():
        if name in cost["records"]:
            out[name] = int(cost["records"][name])
        elif spec.get("path"):
            out[name] = len(read_records(Path(root) / spec["path"]))
        else:
            raise InputError(f"config paper.cost.records has no record count for Hub dataset {name!r} "
                             "(the plan downloads nothing)")
    return out


def model_theta(name: str, cost: dict, root: str | Path = ".", what: str = "rater") -> float:
    """Parameters of a rater or base: paper.cost.thetas, else its prepared results/models/{name}/model.json."""
    if name in cost["thetas"]:
        return float(cost["thetas"][name])
    info = Path(root) / "results/models" / name / "model.json"
    if not info.is_file():
        raise InputError(f"config paper.cost.thetas has no parameter count for {what} {name!r} and {info} does "
                         "not exist")
    return float(json.loads(info.read_text())["theta"])


def used_kinds(config: dict) -> set[str]:
    """Kinds of every method the config selects, trains or tabulates (decides whether IFD and the judge run)."""
    names = list((config.get("selection") or {}).get("methods") or _default("selection", "methods"))
    names += list((config.get("training") or {}).get("methods") or [])
    if (config.get("training") or {}).get("bases"):  # tables/all trains the paper's methods
        names += list((config.get("paper") or {}).get("methods") or PAPER_DEFAULTS["methods"])
    return {methods.parse(n).kind for n in names}


def training_runs(config: dict) -> list[tuple]:
    """(base, dataset, method, proportion, seed) of every fine-tune: training's grid and the paper's runs."""
    training = config.get("training") or {}
    bases = list(training.get("bases") or {})
    if not bases:
        return []
    seeds = training.get("seeds") or [0]
    grid = {(b, d, *methods.canonical(m, p, config), s) for b in bases for d in config["datasets"]
            for m in training.get("methods") or ["selectit"] for p in training.get("proportions") or [0.2]
            for s in seeds}
    grid |= {tuple(r) for r in all_runs(config)}  # tables/all, figures/all
    return sorted(grid)


def resolved_base_settings(config: dict, base: str) -> dict[str, Any]:
    """A base's training settings with the defaults filled in (its DeepSpeed file, checked where the job runs,
    changes no token count and is left out)."""
    settings = base_settings(config.get("training") or {}, base)
    settings.pop("deepspeed", None)
    return resolve_settings(settings)


def eval_items(benchmark: str, settings: dict) -> tuple[int, int, int]:
    """(prompts, rows generated per prompt, new tokens per row) of one evaluation under its settings."""
    s = {**getattr(benchmark_module(benchmark), "DEFAULTS", {}), **(settings or {})}
    limit = s.get("limit")
    full = limit in (None, "all")
    if benchmark == "mmlu":  # limit: questions per subject
        return (EVAL_FULL_ITEMS["mmlu"] if full else int(limit) * MMLU_SUBJECTS), 1, 0
    if benchmark == "gsm":  # limit None: the protocol's 200
        return (200 if limit is None else EVAL_FULL_ITEMS["gsm"] if limit == "all" else int(limit)), 1, \
            int(s["max_new_tokens"])
    if benchmark == "bbh":  # limit: examples per task
        tasks = len(s.get("tasks") or []) or BBH_TASKS
        per_task = EVAL_FULL_ITEMS["bbh"] / BBH_TASKS if full else int(limit)
        return round(tasks * per_task), 1, int(s["max_new_tokens"])
    if benchmark == "tydiqa":  # limit: examples per language
        langs = len(s.get("languages") or []) or TYDIQA_LANGUAGES
        per_lang = EVAL_FULL_ITEMS["tydiqa"] / TYDIQA_LANGUAGES if full else int(limit)
        return round(langs * per_lang), 1, int(s["max_new_tokens"])
    if benchmark in ("codex", "alpaca_eval"):  # limit: problems / instructions
        samples = int(s.get("n_samples", 1))
        return (EVAL_FULL_ITEMS[benchmark] if full else int(limit)), samples, int(s["max_new_tokens"])
    raise InputError(f"no cost profile for benchmark {benchmark!r}")


def padded_share_at(cost: dict, batch: int) -> float:
    shares = {int(k): float(v) for k, v in (cost.get("padded_share") or {}).items()}
    if batch not in shares:
        raise InputError(f"config paper.cost.padded_share has no share for per-device batch {batch} "
                         f"(known: {sorted(shares)}); measure it with benchmarks/training_packing.py")
    return shares[batch]


def planned_parallel_mode(rater: str, gpus: int, root: str | Path = ".") -> tuple[str, str]:
    """(mode, where it comes from) of a planned rater on ``gpus`` GPUs: ``selectit.models.parallel_mode`` of its
    prepared folder (results/models/{rater}/) where this run has one; else, for several GPUs, tensor parallel as
    assumed (the config's raters are Llama-family, which transformers has a plan for; the job checks when it
    loads the model and falls back to the layer split, saying so)."""
    folder = Path(root) / "results/models" / rater
    if gpus <= 1:
        return ONE_DEVICE, "1 GPU"
    if (folder / "config.json").is_file():
        return parallel_mode(folder, gpus)[0], f"{gpus} GPUs, checked on the prepared model"
    return TENSOR_PARALLEL, f"{gpus} GPUs, assumed: not prepared here"


def planned_gpu_factor(mode: str, gpus: int) -> float:
    """GPU-hours per (FLOPs / one GPU's sustained throughput) of a rater run in ``mode`` on ``gpus`` GPUs: 1 on one
    GPU; 1 / TENSOR_PARALLEL_EFFICIENCY in tensor parallel (all compute at once, each on 1/gpus of the work);
    gpus for a layer split (all held, one computing at a time)."""
    if mode == TENSOR_PARALLEL:
        return 1.0 / TENSOR_PARALLEL_EFFICIENCY
    return float(gpus) if mode == LAYER_SPLIT else 1.0


def plan(config: dict, root: str | Path = ".", tokens_per_row: float | None = None,
         tokens_source: str = "measured") -> Any:
    """GPU-hours per stage and job kind of ``config`` (a DataFrame with ``COLUMNS``, a ``stage_key`` column, and
    totals per stage and overall; ``attrs["assumptions"]`` holds every number it assumed)."""
    import pandas as pd


    cost = _cost(config)
    peak, mfu = float(cost["peak_tflops"]), cost["mfu"]

    def hours(flops: float, kind: str) -> float:
        return flops / (peak * 1e12 * mfu[kind]) / 3600.0

    def row(stage_key: str, stage: str, kind: str, jobs: int, tokens: float, flops: float, **extra: Any) -> None:
        rows.append({"Stage": stage, "Job kind": kind, "Jobs": jobs, "Tokens": tokens, "FLOPs": flops,
                     "MFU": mfu.get(kind, math.nan), "GPU-hours": hours(flops, kind) if flops else 0.0,
                     "stage_key": stage_key, **extra})

    for key in ("datasets", "models"):
        if not config.get(key):
            raise InputError(f"the planned config has no {key!r}")
    per_record = float(cost["tokens_per_record"])
    if cost["tokens_per_row"]:
        tokens_per_row, tokens_source = float(cost["tokens_per_row"]), "paper.cost.tokens_per_row"
    if not tokens_per_row:
        # a rating row is the record under a rating prompt (the released ones: 32-46 tokens), a training example
        # the record under the template's system prompt (about as long): 210 against 206 on alpaca_en_demo
        tokens_per_row, tokens_source = per_record, "paper.cost.tokens_per_record (no rating row measured)"
    records = dataset_records(config, cost, root)
    n_prompts = int(config.get("n_prompts", _default("n_prompts")))
    rows: list[dict[str, Any]] = []

    for dataset, n in records.items():  # rating: every dataset, every rater, every prompt
        shards = int(config["datasets"][dataset].get("n_shards", 1))
        for rater, rater_spec in config["models"].items():
            gpus = rater_gpus(rater_spec)
            mode, mode_source = planned_parallel_mode(rater, gpus, root)
            tokens = n * n_prompts * tokens_per_row
            flops = 2 * model_theta(rater, cost, root) * tokens
            row("rating", f"rate {dataset} with {rater}", "forward", n_prompts * shards, tokens, flops,
                **{"GPUs per job": gpus, "Parallel": f"{mode} ({mode_source})"})
            rows[-1]["GPU-hours"] *= planned_gpu_factor(mode, gpus)
    kinds = used_kinds(config)
    selection = config.get("selection") or {}
    if "ifd" in kinds:  # two forward passes a record: instruction + response, then the response alone
        ifd = selection.get("ifd") or {}
        model = ifd.get("model") or schema.default_rater(config)
        length = min(per_record, float(ifd.get("max_length") or _default("selection", "ifd", "max_length")))
        for dataset, n in records.items():
            row("ifd", f"IFD of {dataset} with {model}", "forward", 1, n * 2 * length,
                2 * model_theta(model, cost, root) * n * 2 * length)
    if "judge" in kinds:
        judge = selection.get("judge") or {}
        for dataset, n in records.items():
            if judge.get("type", "hf") != "hf":
                row("judge", f"judge {dataset} ({judge.get('model', 'API')})", "API, no GPU", 1, 0.0, 0.0)
                continue
            model = Path(str(judge.get("model_dir") or schema.default_rater(config))).name
            theta = model_theta(model, cost, root, "judge")
            prompt, new = n * (per_record + JUDGE_PROMPT_TOKENS), n * JUDGE_NEW_TOKENS
            row("judge", f"judge {dataset} with {model} (forward)", "forward", 1, prompt, 2 * theta * prompt)
            row("judge", f"judge {dataset} with {model} (generation)", "generation", 0, new, 2 * theta * new)

    # fine-tuning and evaluation: every run, summed per base and per (benchmark, job kind)
    runs = training_runs(config)
    train: dict[str, dict[str, float]] = {}
    evals: dict[tuple[str, str], dict[str, float]] = {}
    benchmarks = list((config.get("evaluation") or {}).get("benchmarks") or _default("evaluation", "benchmarks"))
    eval_settings = (config.get("evaluation") or {}).get("settings") or {}
    for base, dataset, method, proportion, _seed in runs:
        settings = resolved_base_settings(config, base)
        theta = model_theta((config["training"]["bases"][base] or {}).get("rater", base), cost, root,
                            "training base")
        if settings["max_steps"] > 0:
            trained = settings["max_steps"] * settings["global_batch_size"] * per_record
        else:
            examples = records[dataset] * (1.0 if method == "full" else float(proportion))
            trained = examples * per_record * float(settings["epochs"])
        share = padded_share_at(cost, settings["per_device_batch_size"])
        t = train.setdefault(base, {"jobs": 0, "tokens": 0.0, "packed": 0.0, "padded": 0.0, "configured": 0.0})
        t["jobs"] += 1
        t["tokens"] += trained
        t["packed"] += 6 * theta * trained
        t["padded"] += 6 * theta * trained / (1.0 - share)
        t["configured"] += 6 * theta * trained / (1.0 if settings["packing"] else 1.0 - share)
        for benchmark in benchmarks:
            prompts, samples, new = eval_items(benchmark, eval_settings.get(benchmark))
            for kind, tokens in (("forward", prompts * EVAL_PROMPT_TOKENS[benchmark]),
                                 ("generation", prompts * samples * new)):
                if tokens:
                    e = evals.setdefault((benchmark, kind), {"jobs": 0, "tokens": 0.0, "flops": 0.0})
                    e["jobs"] += kind == "forward"  # a job reads its prompts, and generates where it does
                    e["tokens"] += tokens
                    e["flops"] += 2 * theta * tokens
    for base, t in sorted(train.items()):
        row("training", f"fine-tune {base}", "training", t["jobs"], t["tokens"], t["configured"],
            **{"GPU-hours (padded)": hours(t["padded"], "training"),
               "GPU-hours (packed)": hours(t["packed"], "training")})
    for (benchmark, kind), e in evals.items():
        row("evaluation", f"evaluate {benchmark} ({kind})", kind, e["jobs"], e["tokens"], e["flops"])

    frame = pd.DataFrame(rows)
    for col in COLUMNS + ["GPUs per job", "Parallel"]:
        if col not in frame:
            frame[col] = math.nan
    summed = ["Jobs", "Tokens", "FLOPs", "GPU-hours", "GPU-hours (padded)", "GPU-hours (packed)"]
    totals = []
    for stage, label in STAGE_LABELS.items():
        part = frame[frame["stage_key"] == stage]
        if len(part):
            totals.append({"Stage": f"{label}, total", "Job kind": "", "stage_key": stage,
                           **{c: part[c].sum(min_count=1) for c in summed}})
    totals.append({"Stage": "all stages, total", "Job kind": "", "stage_key": "all",
                   **{c: sum(t[c] for t in totals) for c in ("Jobs", "Tokens", "FLOPs", "GPU-hours")}})
    frame = pd.concat([frame, pd.DataFrame(totals)], ignore_index=True)
    frame.attrs["assumptions"] = {
        "peak_tflops": peak, "mfu": dict(mfu), "tokens_per_row": tokens_per_row, "tokens_source": tokens_source,
        "tokens_per_record": per_record, "n_prompts": n_prompts, "records": records,
        "padded_share": {int(k): float(v) for k, v in (cost.get("padded_share") or {}).items()},
        "eval_prompt_tokens": EVAL_PROMPT_TOKENS, "tensor_parallel_efficiency": TENSOR_PARALLEL_EFFICIENCY,
        "training_runs": len(runs), "benchmarks": benchmarks,
    }
    return frame




def write_plan(frame: Any, csv_path: str | Path, md_path: str | Path, title: str) -> None:
    """The plan as CSV (every column, the assumptions in none) and as a Markdown page (the table, then what it
    assumed), both written atomically."""
    a = frame.attrs["assumptions"]
    table = frame.drop(columns=["stage_key"])
    write_text_atomic(csv_path, table.to_csv(index=False))
    shown = table[["Stage", "Job kind", "Jobs", "Tokens", "FLOPs", "MFU", "GPU-hours", "GPU-hours (padded)"]].copy()
    for col in ("Tokens", "FLOPs"):
        shown[col] = shown[col].map(lambda v: f"{v:.3g}")
    for col in ("GPU-hours", "GPU-hours (padded)"):
        shown[col] = shown[col].map(lambda v: "" if v != v else f"{v:,.1f}" if v >= 1 else f"{v:.2g}")
    shown["MFU"] = shown["MFU"].map(lambda v: "" if v != v else f"{v:.0%}")
    shown["Jobs"] = shown["Jobs"].map(lambda v: f"{int(v):,}")
    notes = [
        f"{a['training_runs']} fine-tunes, each evaluated on {', '.join(a['benchmarks'])}; records "
        + ", ".join(f"{k} {v:,}" for k, v in a["records"].items()) + ".",
        f"Tokens: {a['tokens_per_row']:.0f} a rating row ({a['tokens_source']}), {a['tokens_per_record']:.0f} a "
        f"training example, x {a['n_prompts']} prompts; benchmark prompts as measured on their public data "
        "(selectit.cost.EVAL_PROMPT_TOKENS); generation at its budget, max_new_tokens a row (an upper bound).",
        "FLOPs: 2 θ a token read or generated, 6 θ a trained token x epochs. GPU-hours = FLOPs / "
        f"({a['peak_tflops']:g} TFLOP/s x MFU); MFU per job kind: "
        + ", ".join(f"{k} {v:.0%}" for k, v in a["mfu"].items()) + " (paper.cost.mfu, paper.cost.peak_tflops).",
        "Fine-tuning: 'GPU-hours' with the configured collator (packed unless training.settings.packing is false), "
        "'GPU-hours (padded)' with right-padded micro-batches, whose padded share at each per-device batch is "
        + ", ".join(f"{k}: {v:.0%}" for k, v in sorted(a["padded_share"].items())) + " (paper.cost.padded_share).",
    ]
    write_text_atomic(md_path, f"# {title}\n\n" + shown.to_markdown(index=False) + "\n\n"
                      + "\n".join(f"- {n}" for n in notes) + "\n")
