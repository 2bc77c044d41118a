"""Selection and subset files (Alpaca JSON, ShareGPT JSON, manifest).

The methods are declared in selectit.methods, with how each selects (`Kind.select`, a function of
selectit.rankings, and `Kind.ranking`, what it ranks records by); `select_ids` checks the inputs and calls
the declared function:
- ``full``: every sample; ``random``: int(N * proportion) samples drawn with the seed, in sample order;
- the score levels ``token_r``, ``sentence_r``, ``model_r``, ``selectit`` and their sweeps: the top of the
  method's level table (results/scores/{dataset}/levels/{method}.parquet, column ``score``), best first;
- ``length``: the longest responses; ``random_unselected``: a random draw of the same size from the samples
  the SelectIT level did not select;
- ``ifd``: Q2Q / Cherry LLM (selectit.ifd): the highest IFD among the samples with IFD < 1; samples with
  IFD >= 1 (the instruction does not help; Cherry LLM drops them) rank after all others;
- ``judge``: AlpaGasus-style (selectit.judge): the highest judge scores, size-matched with the other methods
  (ties to the earlier sample; unparsed judge answers last); the manifest also counts the samples that reach
  the AlpaGasus threshold (``selection.judge.threshold``), the subset AlpaGasus itself keeps.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from selectit.atomic import write_json_atomic
from selectit.canaries import is_canary_table
from selectit.errors import InputError
from selectit.fusion import read_samples
from selectit.methods import KINDS, Method, parse

parse_method = parse  # the one parser of method names (selectit.methods)


def ifd_order(ifd: np.ndarray) -> np.ndarray:
    """Sample positions best first for Q2Q (the ``ifd`` method's declared ranking): IFD < 1 by IFD descending,
    then IFD >= 1 by IFD ascending (the closest to useful first), undefined (NaN) last; ties to the earlier
    sample."""
    return KINDS["ifd"].ranking.order_of(ifd)


def judge_order(scores: np.ndarray) -> np.ndarray:
    """Sample positions best first by judge score (the ``judge`` method's declared ranking); ties to the earlier
    sample; NaN (unparsed) last."""
    return KINDS["judge"].ranking.order_of(scores)


def select_ids(method: Method, proportion: float, samples: pd.DataFrame, scores: pd.DataFrame | None,
               seed: int) -> list[str]:
    """Ids of the selected samples, best first for score methods, in sample order otherwise.

    `samples` and `scores` are aligned row by row (same ids, same order, sorted by original index); `scores`
    is what the method reads (selectit.methods): its level table or the SelectIT level (column ``score``),
    the merged IFD table (column ``ifd``) or the judge table (column ``score``). The method's declared
    selection function (`Kind.select`) chooses."""
    if not 0 < proportion <= 1:
        raise InputError(f"proportion must be in (0, 1], got {proportion}")
    spec = method.spec
    ids = samples["id"].to_numpy()
    if spec.reads is not None and (scores is None or not (scores["id"].to_numpy() == ids).all()):
        raise InputError("scores are missing or not aligned with the samples")
    return list(ids[spec.select(spec.ranking, samples, scores if spec.reads is not None else None, proportion,
                                seed)])


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
                           settings: dict[str, Any], alpaca_path: str | Path, sharegpt_path: str | Path,
                           manifest_path: str | Path, scores_path: str | Path | None = None) -> list[str]:
    """Select with one method at one proportion and write the subset.

    `scores_path` is what the method reads (selectit.methods.Kind.reads): its level table, the SelectIT
    level (random_unselected), the merged IFD or judge table; None for full, random and length. `settings`
    are the values it depends on besides (seed, threshold). The manifest records exactly these inputs."""
    method = parse(method_name)
    kind = KINDS[method.kind]
    missing = sorted(set(kind.settings) - set(settings))
    if missing:
        raise InputError(f"method {method_name!r} needs the settings {missing}")
    samples = read_samples(samples_path)
    if is_canary_table(samples):
        raise InputError(f"{samples_path}: an audit's canary set (corrupted copies, selectit.audit) is never "
                         "selected, trained or released")
    scores = None
    if kind.reads is not None:
        if scores_path is None:
            raise InputError(f"method {method_name!r} needs its score table ({kind.reads})")
        scores = pd.read_parquet(scores_path)
    selected = select_ids(method, proportion, samples, scores, settings.get("seed", 0))
    report = json.loads(Path(report_path).read_text())
    manifest: dict[str, Any] = {"dataset_fingerprint": report.get("fingerprint"),
                                "config": {"method": method_name, "proportion": proportion, **settings}}
    if kind.reads in ("level", "selectit"):
        meta = _score_table_meta(scores_path)
        manifest["model_fingerprints"] = meta.get("model_fingerprints")
        manifest["prompt_ids"] = meta.get("prompt_ids")
        manifest["config"].update({k: meta.get(k) for k in ("alpha", "k", "variant", "weights", "level_model",
                                                            "token_prompt", "score_classes")
                                   if meta.get(k) is not None})
    if method.kind == "ifd":
        manifest["ifd"] = _ifd_counts(scores_path, scores, selected)
    if method.kind == "judge":
        manifest["judge"] = _judge_counts(scores_path, scores, selected, settings["threshold"])
    write_subset(selected, samples, alpaca_path, sharegpt_path, manifest_path, manifest)
    return selected
