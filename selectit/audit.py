"""Selection audit: how well each scorer catches bad data, measured before anyone fine-tunes.

The audit draws a seeded sample of ``audit.n`` records from a dataset and makes one corrupted copy of each
(a *canary*), dealing the corruption kinds of ``audit.kinds`` in turn (selectit.canaries). The canaries form a
dataset of their own, ``{dataset}.audit`` (`audit_datasets`): the rating, IFD and judge rules rate them like
any dataset, in their own shards under their own paths, so enabling, disabling or resizing the audit
re-rates no shard of the real data. They are never selected, trained or released: the selection and
release rules accept only the configured datasets, and selectit.selection refuses a table with a
``canary_of`` column.

`audit_metrics` then measures every scorer of the method registry (selectit.methods, ``Kind.scores``), each
by the key its selection ranks records by (``Kind.ranking``, selectit.rankings), plus each rater's token and
sentence level: AUROC of originals vs canaries (ties count one half), the
pairwise win rate (an original scored above its own canary), the share of canaries scored below the cut of
each configured proportion of the real data, per corruption kind; and a flag when a scorer is degenerate
(most records sharing one score, or the raters putting little probability on the score tokens). Where the
samples carry ``flaw`` labels (the embedded default) the flawed records are measured the same way against
the clean ones (no pairs there, so no win rate).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from selectit import layout, schema
from selectit.canaries import CORRUPTIONS
from selectit.errors import InputError
from selectit.fusion import read_meta
from selectit.methods import BASELINES, KINDS, label, parse
from selectit.paper.tabular import finish_table

SUFFIX = ".audit"  # the canary set of dataset d is the dataset `d.audit`


# --------------------------------------------------------------------------------------- configuration
def audit_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The audit section with the schema's defaults filled in (a config that was not validated)."""
    return {**schema.defaults("audit"), **(config.get("audit") or {})}


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
    named = set(config["selection"]["methods"]) | set(config["training"]["methods"])
    for key in ("methods", "strategies", "other_methods"):
        named |= set((config.get("paper") or {}).get(key) or [])
    named_kinds = {parse(n).kind for n in named}
    out = []
    for kind, spec in KINDS.items():
        if not spec.scores:
            continue
        if spec.reads in BASELINES and kind not in named_kinds:
            continue
        source = "level" if spec.reads == "level" else (spec.reads or kind)
        out.append(Scorer(kind, label(kind), source))
    models = list(config["models"])
    if len(models) > 1:
        out += [Scorer(f"token@{m}", f"Token level ({m})", "token", m) for m in models]
        out += [Scorer(f"sentence@{m}", f"Sentence level ({m})", "sentence", m) for m in models]
    return out


def scorer_files(scorer: Scorer, dataset: str, config: Mapping[str, Any]) -> str | None:
    """The score file a scorer reads for a dataset (layout): a method's, the one it selects by
    (`Method.score_table`; None for length and random, which read the samples)."""
    if scorer.source == "token":
        return layout.TOKEN.format(dataset=dataset, model=scorer.model)
    if scorer.source == "sentence":
        return layout.sentence(dataset, scorer.model, config["n_prompts"], config["scoring"]["alpha"])
    return parse(scorer.name).score_table(dataset)


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


def ranking_score(kind: str, table: pd.DataFrame | None, samples: pd.DataFrame | None = None) -> np.ndarray:
    """Higher is better: the key the selection method `kind` ranks records by (its declared `Kind.ranking`,
    selectit.rankings; IFD < 1 by IFD, then IFD >= 1 closest to 1 first), with what it ranks last (NaN: an
    unparsed judge answer, an undefined IFD) at -inf. `table` is its score table; `samples` serve length."""
    keys = parse(kind).spec.ranking.keys(samples, table)
    return np.where(np.isnan(keys), -np.inf, keys)


def read_scores(scorer: Mapping[str, Any], path: str | None, samples: pd.DataFrame, token_prompt: int,
                seed: int) -> pd.Series:
    """One scorer's score of every sample (a Series by id), checked to cover exactly the samples."""
    import pyarrow.parquet as pq

    source = scorer["source"]
    ids = samples["id"]
    if source == "random":
        return pd.Series(random_scores(ids, seed), index=ids)
    if source not in ("token", "sentence") and parse(scorer["name"]).spec.ranking.reads_samples:  # length
        return pd.Series(ranking_score(scorer["name"], None, samples), index=ids)
    table = pq.read_table(path).to_pandas()
    if source == "token":
        columns = [c for c in table.columns if c != "id"]
        values = table[columns[token_prompt - 1]].to_numpy(dtype=np.float64)
    elif source == "sentence":
        values = table["sentence"].to_numpy(dtype=np.float64)
    else:
        values = ranking_score(scorer["name"], table)
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
