"""Selection methods and subset files (Alpaca JSON, ShareGPT JSON, manifest).

A method name is one of
- ``full``: every sample (the proportion is ignored; use 1.0),
- ``random``: int(N * proportion) samples drawn with the configured seed,
- ``selectit``, ``token_r``, ``sentence_r``, ``model_r``: the top of that score (see selectit.fusion),
  optionally with overrides ``-alpha<a>`` and/or ``-k<K>`` (e.g. ``selectit-alpha0.4``, ``selectit-k3``)
  for the alpha and K sweeps (re-fused from the stored logits, no re-rating),
- ``length``: the longest responses (top by response character length),
- ``random_unselected``: a random draw of the same size from the samples SelectIT did not select,
- ``ifd``: Q2Q / Cherry LLM (selectit.ifd): the highest IFD among the samples with IFD < 1; samples with
  IFD >= 1 (the instruction does not help; Cherry LLM drops them) rank after all others,
- ``judge``: AlpaGasus-style (selectit.judge): the highest judge scores, size-matched with the other methods
  (ties to the earlier sample; unparsed judge answers last); the manifest also counts the samples that reach
  the AlpaGasus threshold (``selection.judge.threshold``, 4.5), the subset AlpaGasus itself keeps.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectit import scoring
from selectit.atomic import write_json_atomic
from selectit.errors import InputError

SCORE_METHODS = ("selectit", "token_r", "sentence_r", "model_r")
PLAIN_METHODS = ("full", "random", "length", "random_unselected")
BASELINE_METHODS = ("ifd", "judge")  # scores from results/scores/{dataset}/{ifd,judge}.parquet
_METHOD_RE = re.compile(r"^(?P<base>[a-z_]+)(?:-alpha(?P<alpha>[0-9.]+))?(?:-k(?P<k>[0-9]+))?$")


@dataclass(frozen=True)
class Method:
    base: str
    alpha: float | None = None
    k: int | None = None


def parse_method(name: str) -> Method:
    m = _METHOD_RE.match(name)
    if not m or m["base"] not in SCORE_METHODS + PLAIN_METHODS + BASELINE_METHODS:
        raise InputError(f"unknown selection method {name!r}; use one of "
                         f"{SCORE_METHODS + PLAIN_METHODS + BASELINE_METHODS}, "
                         "optionally with -alpha<a> / -k<K> for score methods (e.g. selectit-alpha0.4)")
    if (m["alpha"] or m["k"]) and m["base"] not in SCORE_METHODS:
        raise InputError(f"method {name!r}: -alpha/-k apply only to {SCORE_METHODS}")
    return Method(m["base"], float(m["alpha"]) if m["alpha"] else None, int(m["k"]) if m["k"] else None)


def ifd_order(ifd: np.ndarray) -> np.ndarray:
    """Sample positions best first for Q2Q: IFD < 1 by IFD descending, then IFD >= 1 by IFD ascending (the
    closest to useful first); ties to the earlier sample."""
    ifd = np.asarray(ifd, dtype=np.float64)
    useful = ifd < 1
    # lexsort sorts by the last key first: useful first, then the key, then the position
    key = np.where(useful, -ifd, ifd)
    return np.lexsort((np.arange(len(ifd)), key, ~useful))


def judge_order(scores: np.ndarray) -> np.ndarray:
    """Sample positions best first by judge score; ties to the earlier sample; NaN (unparsed) last."""
    s = np.asarray(scores, dtype=np.float64)
    unparsed = np.isnan(s)
    return np.lexsort((np.arange(len(s)), -np.where(unparsed, 0.0, s), unparsed))


def select_ids(method: Method, proportion: float, samples: pd.DataFrame, scores: pd.DataFrame | None,
               seed: int) -> list[str]:
    """Ids of the selected samples, best first for score methods, in sample order otherwise.

    `samples` and `scores` are aligned row by row (same ids, same order, sorted by original index); for
    ``ifd`` / ``judge`` `scores` is the merged IFD / judge table (column ``ifd`` / ``score``)."""
    if not 0 < proportion <= 1:
        raise InputError(f"proportion must be in (0, 1], got {proportion}")
    n = len(samples)
    n_keep = int(n * proportion)
    ids = samples["id"].to_numpy()
    if method.base == "full":
        return list(ids)
    if method.base == "random":
        rng = np.random.default_rng(seed)
        return list(ids[np.sort(rng.choice(n, n_keep, replace=False))])
    if method.base == "length":
        lengths = samples["response"].str.len().to_numpy()
        return list(ids[scoring.select_top(lengths, proportion)])
    if scores is None or not (scores["id"].to_numpy() == ids).all():
        raise InputError("scores are missing or not aligned with the samples")
    if method.base == "ifd":
        return list(ids[ifd_order(scores["ifd"].to_numpy())[:n_keep]])
    if method.base == "judge":
        return list(ids[judge_order(scores["score"].to_numpy())[:n_keep]])
    if method.base == "random_unselected":
        chosen = set(scoring.select_top(scores["selectit"].to_numpy(), proportion))
        rest = np.array([i for i in range(n) if i not in chosen])
        if len(rest) < n_keep:
            raise InputError(f"only {len(rest)} unselected samples remain; proportion {proportion} needs {n_keep}")
        rng = np.random.default_rng(seed)
        return list(ids[np.sort(rng.choice(rest, n_keep, replace=False))])
    return list(ids[scoring.select_top(scores[method.base].to_numpy(), proportion)])


def package_versions(names: tuple[str, ...] = ("numpy", "pandas", "pyarrow", "torch", "transformers")) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _atomic_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj, indent=1)


def write_subset(selected: list[str], samples: pd.DataFrame, alpaca_path: str | Path, sharegpt_path: str | Path,
                 manifest_path: str | Path, manifest: dict[str, Any]) -> None:
    """Alpaca JSON (instruction = normalised instruction, input empty), ShareGPT JSON and the manifest.

    The manifest is written last: its presence marks the subset complete."""
    rows = samples.set_index("id").loc[selected]
    alpaca = [{"id": i, "instruction": r.instruction, "input": "", "output": r.response}
              for i, r in zip(selected, rows.itertuples())]
    sharegpt = [{"id": i, "conversations": [{"from": "human", "value": r.instruction},
                                            {"from": "gpt", "value": r.response}]}
                for i, r in zip(selected, rows.itertuples())]
    _atomic_json(Path(alpaca_path), alpaca)
    _atomic_json(Path(sharegpt_path), sharegpt)
    _atomic_json(Path(manifest_path), {**manifest, "n_selected": len(selected), "n_total": len(samples),
                                       "selected_ids": selected, "package_versions": package_versions()})


def _score_table_meta(path: str | Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(b"selectit")
    return json.loads(raw) if raw else {}


def _ifd_counts(path: str | Path, table: pd.DataFrame, selected: list[str]) -> dict[str, Any]:
    """The IFD model and how many samples (all / selected) have IFD >= 1 or were truncated."""
    meta = _score_table_meta(path)
    chosen = table["id"].isin(set(selected))
    return {"model": meta.get("model"), "model_fingerprint": meta.get("model_fingerprint"),
            "max_length": meta.get("max_length"), "dtype": meta.get("dtype"),
            "n_ifd_at_least_1": int((table["ifd"] >= 1).sum()),
            "n_selected_ifd_at_least_1": int((table["ifd"][chosen] >= 1).sum()),
            "n_truncated": int(table["truncated"].sum())}


def _judge_counts(path: str | Path, table: pd.DataFrame, selected: list[str], threshold: float) -> dict[str, Any]:
    """The judge, the AlpaGasus view (how many samples reach the threshold) and the unparsed answers."""
    meta = _score_table_meta(path)
    chosen = table["id"].isin(set(selected))
    reach = table["score"] >= threshold  # NaN (unparsed) never reaches it
    return {"type": meta.get("type"), "model": meta.get("model"), "model_fingerprint": meta.get("model_fingerprint"),
            "base_url": meta.get("base_url"), "prompt_sha": meta.get("prompt_sha"), "threshold": threshold,
            "n_at_least_threshold": int(reach.sum()), "n_selected_below_threshold": int((chosen & ~reach).sum()),
            "n_unparsed": int(table["unparsed"].sum()), "n_selected_unparsed": int((chosen & table["unparsed"]).sum()),
            "n_truncated": int(table["truncated"].sum())}


def make_subset_from_files(method_name: str, proportion: float, samples_path: str | Path, report_path: str | Path,
                           logits_paths: dict[str, str | Path], info_paths: dict[str, str | Path], scoring: dict,
                           n_prompts: int | None, prompt_ids: list[str], seed: int, alpaca_path: str | Path,
                           sharegpt_path: str | Path, manifest_path: str | Path, ifd_path: str | Path | None = None,
                           judge_path: str | Path | None = None, judge_threshold: float | None = None) -> list[str]:
    """Select with one method at one proportion (re-fusing for -alpha/-k overrides) and write the subset.

    ``ifd`` needs ifd_path (results/scores/{dataset}/ifd.parquet), ``judge`` judge_path and judge_threshold."""
    from selectit.fusion import _samples, fuse_files, weights_from_files

    method = parse_method(method_name)
    samples = _samples(samples_path)
    weights = weights_from_files(info_paths, scoring["model_weights"])
    alpha = scoring["alpha"] if method.alpha is None else method.alpha
    k = n_prompts if method.k is None else method.k
    if k is not None and k > len(prompt_ids):
        raise InputError(f"method {method_name!r} asks for K={k} prompts but only {len(prompt_ids)} were rated")
    scores = None
    if method.base in SCORE_METHODS + ("random_unselected",):
        scores = fuse_files(samples_path, logits_paths, weights, alpha, scoring["variant"], k)
    baseline: dict[str, Any] = {}
    if method.base in BASELINE_METHODS:
        path = ifd_path if method.base == "ifd" else judge_path
        if path is None:
            raise InputError(f"method {method_name!r} needs its merged score table (results/scores/<dataset>/"
                             f"{method.base}.parquet)")
        scores = pd.read_parquet(path)
    selected = select_ids(method, proportion, samples, scores, seed)
    if method.base == "ifd":
        baseline["ifd"] = _ifd_counts(ifd_path, scores, selected)
    if method.base == "judge":
        if judge_threshold is None:
            raise InputError("method 'judge' needs selection.judge.threshold")
        baseline["judge"] = _judge_counts(judge_path, scores, selected, judge_threshold)
    report = json.loads(Path(report_path).read_text())
    infos = {m: json.loads(Path(p).read_text()) for m, p in info_paths.items()}
    manifest = {
        "dataset_fingerprint": report.get("fingerprint"),
        "model_fingerprints": {m: i["fingerprint"] for m, i in infos.items()},
        "prompt_ids": prompt_ids[:k] if k else prompt_ids,
        "config": {"method": method_name, "proportion": proportion, "seed": seed, "alpha": alpha,
                   "n_prompts": k, "variant": scoring["variant"], "model_weights": weights},
        **baseline,
    }
    write_subset(selected, samples, alpaca_path, sharegpt_path, manifest_path, manifest)
    return selected
