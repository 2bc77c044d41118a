"""Selection audit: how well each scorer catches bad data, measured before anyone fine-tunes.

The audit draws a seeded sample of ``audit.n`` records from a dataset and makes one corrupted copy of each
(a *canary*), dealing the corruption kinds of ``audit.kinds`` in turn (CORRUPTIONS). The canaries form a
dataset of their own, ``{dataset}.audit`` (`audit_datasets`): the rating, IFD and judge rules rate them like
any dataset, in their own shards under their own paths, so enabling, disabling or resizing the audit
re-rates no shard of the real data. They are never selected, trained or released: the selection and
release rules accept only the configured datasets, and selectit.selection refuses a table with a
``canary_of`` column.

`audit_metrics` then measures every scorer of the method registry (selectit.methods, ``Kind.scores``),
plus each rater's token and sentence level: AUROC of originals vs canaries (ties count one half), the
pairwise win rate (an original scored above its own canary), the share of canaries scored below the cut of
each configured proportion of the real data, per corruption kind; and a flag when a scorer is degenerate
(most records sharing one score, or the raters putting little probability on the score tokens). Where the
samples carry ``flaw`` labels (the embedded default) the flawed records are measured the same way against
the clean ones (no pairs there, so no win rate).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from selectit.errors import InputError

SUFFIX = ".audit"  # the canary set of dataset d is the dataset `d.audit`


# ------------------------------------------------------------------------------------------- corruptions
REFUSALS = (
    "I'm sorry, but I can't help with that request.",
    "As an AI language model, I am unable to assist with this.",
    "I apologize, but I cannot provide an answer to that.",
)
_NUMBER = re.compile(r"\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _words(text: str) -> list[str]:
    return text.split()


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


def _truncate(rec: Mapping[str, str], rng: np.random.Generator, other: str) -> str:
    """The response up to the end of a word 30-60 % of the way through (its own whitespace kept)."""
    ends = [m.end() for m in re.finditer(r"\S+", rec["response"])]
    keep = int(rng.integers(max(1, int(0.3 * len(ends))), int(0.6 * len(ends)) + 1))
    return rec["response"][:ends[keep - 1]]


def _change_numbers(rec: Mapping[str, str], rng: np.random.Generator, other: str) -> str:
    def change(match: re.Match) -> str:
        value = int(match.group())
        step = int(rng.integers(1, 10))
        new = value - step if value >= step and rng.random() < 0.5 else value + step
        return str(new).zfill(len(match.group())) if match.group().startswith("0") else str(new)

    return _NUMBER.sub(change, rec["response"])


def _shuffle(rec: Mapping[str, str], rng: np.random.Generator, other: str) -> str:
    parts = _sentences(rec["response"])
    order = rng.permutation(len(parts))
    if (order == np.arange(len(parts))).all():
        order = np.roll(order, 1)
    return " ".join(parts[i] for i in order)


@dataclass(frozen=True)
class Corruption:
    doc: str
    applies: Callable[[Mapping[str, str]], bool]
    make: Callable[[Mapping[str, str], np.random.Generator, str], str]  # (record, rng, another response)


CORRUPTIONS: dict[str, Corruption] = {
    "off_topic": Corruption("the response of another record (drawn with the seed; a different response)",
                            lambda r: True, lambda r, rng, other: other),
    "truncated": Corruption("the response cut after 30-60 % of its words (responses of 8 words or more)",
                            lambda r: len(_words(r["response"])) >= 8, _truncate),
    "refusal": Corruption("a refusal (one of REFUSALS) instead of the response",
                          lambda r: True, lambda r, rng, other: REFUSALS[int(rng.integers(len(REFUSALS)))]),
    "wrong_answer": Corruption("every number in the response changed by 1-9 (responses with a digit)",
                               lambda r: bool(_NUMBER.search(r["response"])), _change_numbers),
    "copied_instruction": Corruption("the instruction (with its input) copied as the response",
                                     lambda r: r["instruction"].strip() != r["response"].strip(),
                                     lambda r, rng, other: r["instruction"]),
    "shuffled": Corruption("the response's sentences in another order (responses of 3 sentences or more)",
                           lambda r: len(_sentences(r["response"])) >= 3, _shuffle),
}


def canary_id(kind: str, original: str, response: str) -> str:
    """A canary's id: its kind, original and text hashed (never a real id, which starts with `s`)."""
    return "c" + hashlib.sha256(f"{kind}\x1f{original}\x1f{response}".encode()).hexdigest()[:16]


def make_canaries(table: pd.DataFrame, n: int, seed: int, kinds: Sequence[str],
                  where: str = "dataset") -> tuple[pd.DataFrame, dict[str, Any]]:
    """n canaries of a sample table (id, instruction, response): the records are visited in a seeded order and
    the kinds dealt in turn, each kind to the next unused record it applies to. A kind that runs out of
    records it applies to makes fewer canaries; the report counts what each kind made and passed over."""
    unknown = [k for k in kinds if k not in CORRUPTIONS]
    if unknown:
        raise InputError(f"config audit.kinds: unknown corruption kinds {unknown}; use {list(CORRUPTIONS)}")
    if n > len(table):
        raise InputError(f"config audit.n: {n} canaries asked for, but {where} has {len(table)} records")
    rng = np.random.default_rng(seed)
    records = table[["id", "instruction", "response"]].to_dict("records")
    order = rng.permutation(len(records))
    used: set[int] = set()
    pointer = {k: 0 for k in kinds}
    counts = {k: {"made": 0, "passed_over": 0} for k in kinds}
    rows, active = [], list(kinds)
    while len(rows) < n and active:
        for kind in list(active):
            if len(rows) >= n:
                break
            corruption = CORRUPTIONS[kind]
            while pointer[kind] < len(order):
                i = int(order[pointer[kind]])
                pointer[kind] += 1
                if i in used:
                    continue
                if not corruption.applies(records[i]):
                    counts[kind]["passed_over"] += 1
                    continue
                break
            else:
                active.remove(kind)
                continue
            used.add(i)
            rec = records[i]
            other = rec["response"]
            while other == rec["response"] and len(records) > 1:
                other = records[int(rng.integers(len(records)))]["response"]
            response = corruption.make(rec, rng, other)
            rows.append({"id": canary_id(kind, rec["id"], response), "index": len(rows),
                         "instruction": rec["instruction"], "response": response,
                         "source": f"audit of {where}", "canary_of": rec["id"], "kind": kind})
            counts[kind]["made"] += 1
    canaries = pd.DataFrame(rows, columns=["id", "index", "instruction", "response", "source", "canary_of", "kind"])
    canaries["index"] = canaries["index"].astype("int64")
    report = {"source": where, "format": "canaries", "n_read": len(table), "n_kept": len(canaries),
              "audit": {"n_requested": n, "seed": seed, "kinds": counts, "shortfall": n - len(canaries)}}
    return canaries, report


def canary_table(spec: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The canary set of an audit spec (`audit_datasets`), built from its source dataset."""
    from selectit.data import load_dataset_table

    table, _ = load_dataset_table(spec["source"])
    where = spec["source"].get("path") or f"hf://{spec['source'].get('hf_name')}"
    return make_canaries(table, int(spec["n"]), int(spec["seed"]), spec["kinds"], where=str(where))


# --------------------------------------------------------------------------------------- configuration
def audit_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The audit section with the schema's defaults filled in (a config that was not validated)."""
    from selectit.methods import config_schema

    properties = config_schema()["properties"]["audit"]["properties"]
    defaults = {key: spec["default"] for key, spec in properties.items() if "default" in spec}
    return {**defaults, **(config.get("audit") or {})}


def audited(config: Mapping[str, Any]) -> list[str]:
    """The datasets audited: audit.datasets (checked against datasets), every dataset when null; none when
    the audit is off."""
    settings = audit_settings(config)
    names = list(config["datasets"])
    for name in names:
        if name.endswith(SUFFIX):
            raise InputError(f"config datasets.{name}: names ending in {SUFFIX!r} are the audit's canary sets")
    if not settings.get("enabled", False):
        return []
    chosen = settings.get("datasets")
    if chosen is None:
        return names
    unknown = [d for d in chosen if d not in names]
    if unknown:
        raise InputError(f"config audit.datasets: {unknown} are not in datasets {names}")
    return list(chosen)


def audit_datasets(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The canary set of each audited dataset, as a dataset spec: `{dataset}.audit` -> its source's entry
    and the audit settings that make its canaries (one shard: n / N of the rating work)."""
    settings = audit_settings(config)
    return {d + SUFFIX: {"canaries_of": d, "source": dict(config["datasets"][d]), "n": int(settings["n"]),
                         "seed": int(settings["seed"]), "kinds": list(settings["kinds"]), "n_shards": 1}
            for d in audited(config)}


def source_path(spec: Mapping[str, Any]) -> str | None:
    """The local file a dataset (or an audit's canary set) is read from, else None (a Hub dataset)."""
    return spec.get("path") or (spec.get("source") or {}).get("path")


def is_canary_table(samples: pd.DataFrame) -> bool:
    return "canary_of" in samples.columns


# -------------------------------------------------------------------------------------------- scorers
@dataclass(frozen=True)
class Scorer:
    name: str  # a method kind (selectit.methods) or `token@<rater>` / `sentence@<rater>`
    label: str
    source: str  # level, token, sentence, ifd, judge, length, random
    model: str | None = None  # token / sentence: the rater


def scorers(config: Mapping[str, Any]) -> list[Scorer]:
    """What the audit measures: every scoring method of the registry (`Kind.scores`): the score levels,
    length and random always, IFD and the judge when a configured method list names them (they cost
    compute of their own); and with more than one rater, each rater's token and sentence level."""
    from selectit.methods import KINDS, label, parse

    named = set(config["selection"]["methods"]) | set(config["training"]["methods"])
    for key in ("methods", "strategies", "other_methods"):
        named |= set((config.get("paper") or {}).get(key) or [])
    named_kinds = {parse(n).kind for n in named}
    out = []
    for kind, spec in KINDS.items():
        if not spec.scores:
            continue
        if spec.reads in ("ifd", "judge") and kind not in named_kinds:
            continue
        source = "level" if spec.reads == "level" else (spec.reads or kind)
        out.append(Scorer(kind, label(kind), source))
    models = list(config["models"])
    if len(models) > 1:
        out += [Scorer(f"token@{m}", f"Token level ({m})", "token", m) for m in models]
        out += [Scorer(f"sentence@{m}", f"Sentence level ({m})", "sentence", m) for m in models]
    return out


def scorer_files(scorer: Scorer, dataset: str, config: Mapping[str, Any]) -> str | None:
    """The score file a scorer reads for a dataset (layout), or None (length and random read the samples)."""
    from selectit import layout

    if scorer.source == "level":
        return layout.LEVEL.format(dataset=dataset, method=scorer.name)
    if scorer.source == "token":
        return layout.TOKEN.format(dataset=dataset, model=scorer.model)
    if scorer.source == "sentence":
        return layout.sentence(dataset, scorer.model, config["n_prompts"], config["scoring"]["alpha"])
    if scorer.source in ("ifd", "judge"):
        return layout.BASELINE.format(dataset=dataset, baseline=scorer.source)
    return None


def plan(config: Mapping[str, Any], dataset: str) -> list[dict[str, Any]]:
    """Per scorer: its name, label, source, rater and the files it reads for the data and for the canaries
    (the audit job's params; its inputs are the same files)."""
    return [{"name": s.name, "label": s.label, "source": s.source, "model": s.model,
             "real": scorer_files(s, dataset, config), "canary": scorer_files(s, dataset + SUFFIX, config)}
            for s in scorers(config)]


# -------------------------------------------------------------------------------------------- metrics
def auroc(good: Sequence[float], bad: Sequence[float]) -> float:
    """P(a good record scores above a bad one), ties counted one half (the Mann-Whitney U statistic / n_g n_b)."""
    good, bad = np.asarray(good, dtype=np.float64), np.asarray(bad, dtype=np.float64)
    if not len(good) or not len(bad):
        return math.nan
    ranks = pd.Series(np.concatenate([good, bad])).rank(method="average").to_numpy()
    u = ranks[:len(good)].sum() - len(good) * (len(good) + 1) / 2
    return float(u / (len(good) * len(bad)))


def cutoff(scores: Sequence[float], proportion: float) -> float:
    """The score of the last record kept when the top int(N * proportion) records are selected (inf: none)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    n_keep = int(len(s) * proportion)
    return float(s[n_keep - 1]) if n_keep else math.inf


def left_out(scores: Sequence[float], cut: float) -> float:
    """Share of `scores` below the cut (a score equal to it counts as kept)."""
    s = np.asarray(scores, dtype=np.float64)
    return float((s < cut).mean()) if len(s) else math.nan


def mode_share(scores: Sequence[float]) -> float:
    """Share of the records holding the most common score (scores rounded to 6 decimals)."""
    s = pd.Series(np.round(np.asarray(scores, dtype=np.float64), 6))
    return float(s.value_counts().iloc[0] / len(s)) if len(s) else math.nan


def random_scores(ids: Sequence[str], seed: int) -> np.ndarray:
    """The random scorer: a uniform number per record from its id and the seed (the same record, the same score)."""
    return np.array([int(hashlib.sha256(f"{seed}\x1f{i}".encode()).hexdigest()[:13], 16) / 16 ** 13 for i in ids])


def ranking_score(source: str, table: pd.DataFrame) -> np.ndarray:
    """Higher is better, in the order the selection method ranks records (selectit.selection): IFD < 1 by
    IFD, then IFD >= 1 closest to 1 first; unparsed judge answers and missing IFDs last."""
    if source == "ifd":
        ifd = table["ifd"].to_numpy(dtype=np.float64)
        return np.where(np.isnan(ifd), -np.inf, np.where(ifd < 1, ifd, -ifd))
    if source == "judge":
        s = table["score"].to_numpy(dtype=np.float64)
        return np.where(np.isnan(s), -np.inf, s)
    return table["score"].to_numpy(dtype=np.float64)


def read_scores(scorer: Mapping[str, Any], path: str | None, samples: pd.DataFrame, token_prompt: int,
                seed: int) -> pd.Series:
    """One scorer's score of every sample (a Series by id), checked to cover exactly the samples."""
    import pyarrow.parquet as pq

    source = scorer["source"]
    ids = samples["id"]
    if source == "length":
        return pd.Series(samples["response"].str.len().to_numpy(dtype=np.float64), index=ids)
    if source == "random":
        return pd.Series(random_scores(ids, seed), index=ids)
    table = pq.read_table(path).to_pandas()
    if source == "token":
        columns = [c for c in table.columns if c != "id"]
        values = table[columns[token_prompt - 1]].to_numpy(dtype=np.float64)
    elif source == "sentence":
        values = table["sentence"].to_numpy(dtype=np.float64)
    else:
        values = ranking_score(source, table)
    series = pd.Series(values, index=table["id"])
    if set(series.index) != set(ids) or len(series) != len(ids):
        raise InputError(f"{path}: its ids are not the {len(ids)} samples of its dataset; rerun the audit's scoring")
    return series.loc[ids]


def median_mass(shards: Sequence[str]) -> dict[str, float]:
    """Median probability on the score tokens per rater (results/ratings/{dataset}/{model}/...)."""
    import pyarrow.parquet as pq

    masses: dict[str, list[np.ndarray]] = {}
    for path in shards:
        model = str(path).split("/")[-3]
        masses.setdefault(model, []).append(pq.read_table(path, columns=["score_mass"])["score_mass"].to_numpy())
    return {m: float(np.median(np.concatenate(v))) for m, v in masses.items()}


def _raters(scorer: Mapping[str, Any], path: str | None, models: Sequence[str]) -> list[str]:
    """The raters whose score-token mass a scorer depends on (a level: the one it names, else all raters)."""
    from selectit.fusion import read_meta

    if scorer["source"] in ("token", "sentence"):
        return [scorer["model"]]
    if scorer["source"] == "level":
        level_model = read_meta(path).get("level_model")
        return [level_model] if level_model else list(models)
    return []


def degenerate(scores: np.ndarray, raters: Sequence[str], mass: Mapping[str, float], max_mode_share: float,
               min_mass: float) -> str:
    """Why a scorer is degenerate on the real data ('' when it is not)."""
    reasons = []
    share = mode_share(scores)
    if share > max_mode_share:
        reasons.append(f"{share:.0%} of records share one score")
    low = [f"{r} {mass[r]:.3f}" for r in raters if r in mass and mass[r] < min_mass]
    if low:
        reasons.append("median score-token mass " + ", ".join(low))
    return "; ".join(reasons)


def _rows(reference: str, scorer: Mapping[str, Any], groups: Mapping[str, tuple], cuts: Mapping[float, float],
          flag: str) -> list[dict[str, Any]]:
    rows = []
    for kind, (good, bad, paired) in groups.items():
        row = {"reference": reference, "scorer": scorer["name"], "label": scorer["label"], "kind": kind,
               "n_good": len(good), "n_bad": len(bad), "auroc": auroc(good, bad),
               "win_rate": float((good > bad).mean()) if paired and len(bad) else math.nan,
               "tie_rate": float((good == bad).mean()) if paired and len(bad) else math.nan}
        for p, cut in cuts.items():
            row[f"left_out_{p:g}"] = left_out(bad, cut)
            row[f"good_left_out_{p:g}"] = left_out(good, cut)
        row["degenerate"] = flag
        rows.append(row)
    return rows


def audit_metrics(samples: pd.DataFrame, canaries: pd.DataFrame, plan_rows: Sequence[Mapping[str, Any]],
                  proportions: Sequence[float], *, seed: int, token_prompt: int, models: Sequence[str],
                  mass: Mapping[str, float], max_mode_share: float, min_score_mass: float) -> pd.DataFrame:
    """The audit table, long: one row per (reference, scorer, kind) with kind `all` first (see the module)."""
    missing = sorted(set(canaries["canary_of"]) - set(samples["id"]))
    if missing:
        raise InputError(f"{len(missing)} canaries' originals are not in the samples (e.g. {missing[0]}); "
                         "the canary set is stale: rerun prepare_data of the audit")
    kinds = list(dict.fromkeys(canaries["kind"]))
    flaws = None
    if "flaw" in samples.columns and samples["flaw"].notna().any():
        flaws = samples["flaw"].where(samples["flaw"].astype("string").str.strip() != "", None)
    rows: list[dict[str, Any]] = []
    for scorer in plan_rows:
        real = read_scores(scorer, scorer["real"], samples, token_prompt, seed)
        fake = read_scores(scorer, scorer["canary"], canaries, token_prompt, seed)
        cuts = {float(p): cutoff(real.to_numpy(), float(p)) for p in proportions}
        flag = degenerate(real.to_numpy(), _raters(scorer, scorer["real"], models), mass, max_mode_share,
                          min_score_mass)
        originals = real.loc[canaries["canary_of"]].to_numpy()
        corrupted = fake.loc[canaries["id"]].to_numpy()
        groups = {"all": (originals, corrupted, True)}
        for kind in kinds:
            mask = (canaries["kind"] == kind).to_numpy()
            groups[kind] = (originals[mask], corrupted[mask], True)
        rows += _rows("canaries", scorer, groups, cuts, flag)
        if flaws is not None:
            bad = flaws.notna().to_numpy()
            values = real.to_numpy()
            groups = {"all": (values[~bad], values[bad], False)}
            for kind in sorted(flaws.dropna().unique()):
                groups[kind] = (values[~bad], values[(flaws == kind).to_numpy()], False)
            rows += _rows("flaw labels", scorer, groups, cuts, flag)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- table and figure
KIND_ORDER = ("all", *CORRUPTIONS)


def read_metrics(paths: Sequence[str]) -> pd.DataFrame:
    """The metrics of every audited dataset (results/audit/{dataset}/metrics.csv), with a dataset column."""
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]).assign(dataset=str(p).split("/")[-2])
              for p in paths]
    if not frames:
        raise InputError("no audited dataset: set audit.enabled (and audit.datasets)")
    return pd.concat(frames, ignore_index=True)


def summary(metrics: pd.DataFrame, proportions: Sequence[float]) -> pd.DataFrame:
    """The audit table: a row per (dataset, reference, scorer); AUROC overall and per kind, the win rate,
    the share of the bad records left out at each proportion, and the degenerate flag."""
    from selectit.paper.tables import finish_table

    keys = ["dataset", "reference", "scorer"]
    order = {name: i for i, name in enumerate(dict.fromkeys(metrics["scorer"]))}
    kinds = [k for k in dict.fromkeys([*KIND_ORDER, *metrics["kind"]]) if k in set(metrics["kind"])]
    auc = metrics.pivot_table(index=keys, columns="kind", values="auroc", aggfunc="first", dropna=False)
    overall = metrics[metrics["kind"] == "all"].set_index(keys)
    table = pd.DataFrame(index=overall.index)
    table["Scorer"] = overall["label"]
    for kind in kinds:
        table["AUROC" if kind == "all" else f"AUROC {kind}"] = auc[kind].reindex(table.index)
    table["Win rate"] = overall["win_rate"]
    for p in proportions:
        table[f"Left out at {p:g}"] = overall[f"left_out_{p:g}"]
    table["Degenerate"] = overall["degenerate"].fillna("")
    table = table.reset_index()
    table["_order"] = table["scorer"].map(order)
    table = table.sort_values(["dataset", "reference", "_order"]).drop(columns=["scorer", "_order"])
    table = table.rename(columns={"dataset": "Dataset", "reference": "Against"}).set_index(["Dataset", "Against"])
    n = metrics[metrics["kind"] == "all"].groupby(["dataset", "reference"], sort=False)["n_bad"].first()
    what = {"canaries": "canaries", "flaw labels": "flawed records"}
    counts = "; ".join(f"{d}: {int(v)} {what.get(r, r)}" for (d, r), v in n.items())
    return finish_table(table, "how well each scorer ranks records above corrupted copies of them (canaries) and clean "
                   "records above flawed ones",
                   [f"Bad records: {counts}.",
                    "AUROC: the chance that an original (or clean) record scores above a canary (or flawed "
                    "record), ties one half; 0.5 is chance. Win rate: the share of canaries scored below their own "
                    "original. Left out at p: the share of canaries (flawed records) scored below the cut of the "
                    "top p of the real data.",
                    "Degenerate: most records share one score, or the raters put little probability on the "
                    "score tokens (audit.max_mode_share, audit.min_score_mass)."])
