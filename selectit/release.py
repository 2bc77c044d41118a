"""A Hugging Face Hub dataset folder per selected subset (``snakemake release``), ready to upload as it is.

Layout of ``results/release/{dataset}/{method}/{proportion}/``:

- ``README.md``: the dataset card, with the Hub's YAML header (license, size category, source dataset, two
  configs: ``default`` = the subset, ``scores`` = the score table) and what the subset is and how it was made
  (source and revision, selection settings, raters and their fingerprints, prompts, counts);
- ``data/train-00000-of-00001-<digest>.parquet``: the subset, the rows and columns of the Alpaca JSON in its
  order;
- ``alpaca.json``: the subset's Alpaca JSON, byte for byte;
- ``scores/train-00000-of-00001-<digest>.parquet``: every sample of the dataset (not only the selected ones) with
  every score level of every rater (results/scores/{dataset}/selectit.parquet), the ``ifd`` / ``judge``
  baseline's own scores for those methods, and ``selected``.

``datasets.load_dataset(folder)`` loads the subset, ``load_dataset(folder, "scores")`` the score table. The
Parquet names carry a digest of their bytes: ``datasets`` (5.2) caches a local folder whose card declares its
configs by the folder's name and the declared file names only, so without it two releases named ``0.2`` (or one
release rebuilt with other rows) would be served from one another's cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from selectit import __version__, layout
from selectit.atomic import atomic_dir, atomic_path, write_text_atomic
from selectit.errors import InputError
from selectit.methods import BASELINES

RELEASE_DIR = layout.RELEASE_DIR  # proportion as the subset is named (selectit.layout)
FILES = {"card": "README.md", "alpaca": "alpaca.json", "subset": "data", "scores": "scores"}  # data, scores: folders
ALPACA_COLUMNS = ["id", "instruction", "input", "output"]
# the Hub's size_categories, by upper bound of the row count
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
PAPER = ("Liu et al. 2024, *SelectIT: Selective Instruction Tuning for LLMs via Uncertainty-Aware "
         "Self-Reflection*, [arXiv:2402.16705](https://arxiv.org/abs/2402.16705)")


def release_dir(dataset: str, method: str, proportion: float) -> str:
    """The release folder of a subset, named like the subset (`full` at 1.0)."""
    return RELEASE_DIR.format(dataset=dataset, method=method, proportion=layout.subset_proportion(method, proportion))


def release_targets(datasets: Iterable[str], methods: Iterable[str], proportions: Iterable[float]) -> list[str]:
    """The card of every release folder a config asks for (one per dataset x method x proportion)."""
    methods, proportions = list(methods), list(proportions)
    return sorted({f"{release_dir(d, m, p)}/{FILES['card']}" for d in datasets for m in methods for p in proportions})


def size_category(n: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>1B"


def _read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc})") from None


def read_subset(subset_path: str | Path, manifest_path: str | Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The subset's Alpaca records and its manifest, checked to describe the same samples."""
    records = _read_json(subset_path, "subset (Alpaca JSON)")
    manifest = _read_json(manifest_path, "subset manifest")
    if not isinstance(records, list):
        raise InputError(f"{subset_path}: expected a JSON list of Alpaca records")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or sorted(rec) != sorted(ALPACA_COLUMNS):
            raise InputError(f"{subset_path}: record {i} is not an Alpaca record with {ALPACA_COLUMNS}")
    if [r["id"] for r in records] != manifest.get("selected_ids"):
        raise InputError(f"{subset_path}: its ids differ from the selected_ids of {manifest_path}; "
                         "the two are from different runs: rerun select_subset")
    return records, manifest


def score_table(scores_path: str | Path, selected: list[str], baselines: dict[str, str | Path] | None = None,
                n_total: int | None = None) -> pa.Table:
    """Every sample's scores (every level, every rater), the baselines' columns as ``{method}/{column}`` and
    ``selected``; checked to hold every selected sample (and n_total samples, when given)."""
    table = pq.read_table(scores_path).replace_schema_metadata(None)
    ids = table.column("id").to_pylist()
    if n_total is not None and len(ids) != n_total:
        raise InputError(f"{scores_path}: {len(ids)} samples, but the subset manifest counts {n_total}; "
                         "the scores are from a different run of the dataset: rerun fuse_scores")
    missing = sorted(set(selected) - set(ids))
    if missing:
        raise InputError(f"{scores_path}: no scores for {len(missing)} selected samples (e.g. {missing[:3]})")
    for method, path in (baselines or {}).items():
        other = pq.read_table(path).to_pandas().set_index("id")
        absent = sorted(set(ids) - set(other.index))
        if absent:
            raise InputError(f"{path}: no {method} scores for {len(absent)} samples (e.g. {absent[:3]})")
        other = other.loc[ids]
        for col in other.columns:
            table = table.append_column(f"{method}/{col}", pa.array(other[col].to_numpy()))
    chosen = set(selected)
    return table.append_column("selected", pa.array([i in chosen for i in ids], pa.bool_()))


def write_split(table: pa.Table, folder: str | Path) -> str:
    """The table as the folder's one train file, named with a digest of its bytes; returns `<folder>/<file>`."""
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        staged = tmp / "staged.parquet"
        pq.write_table(table, staged)
        digest = hashlib.sha256(staged.read_bytes()).hexdigest()[:12]
        name = f"train-00000-of-00001-{digest}.parquet"
        staged.rename(tmp / name)
    return f"{folder.name}/{name}"


def card_header(name: str, n_rows: int, license: str, source: dict[str, Any], files: dict[str, str]
                ) -> dict[str, Any]:
    header: dict[str, Any] = {
        "license": license,
        "pretty_name": name,
        "size_categories": [size_category(n_rows)],
        "task_categories": ["text-generation"],
        "tags": ["instruction-tuning", "data-selection", "selectit"],
    }
    if source.get("hf_name"):
        header["source_datasets"] = [source["hf_name"]]
    header["configs"] = [
        {"config_name": "default", "data_files": [{"split": "train", "path": files["subset"]}], "default": True},
        {"config_name": "scores", "data_files": [{"split": "train", "path": files["scores"]}]},
    ]
    return header


def _source_line(source: dict[str, Any]) -> str:
    if source.get("hf_name"):
        return (f"Hugging Face dataset [`{source['hf_name']}`](https://huggingface.co/datasets/{source['hf_name']}), "
                f"revision `{source.get('revision')}`, split `{source.get('split', 'train')}`")
    return f"local file `{source.get('path')}`"


def _rater_line(spec: dict[str, Any]) -> str:
    origin = next((f"{k}: `{spec[k]}`" for k in ("hf", "gguf", "package") if spec.get(k)), "?")
    if spec.get("revision"):
        origin += f" @ `{spec['revision']}`"
    return origin


def rater_infos(info_paths: dict[str, str | Path], manifest: dict[str, Any], manifest_path: str | Path
                ) -> dict[str, dict[str, Any]]:
    """Each rater's model.json; a fingerprint the subset manifest records must be the prepared model's."""
    infos = {m: _read_json(p, "prepared model's model.json") for m, p in info_paths.items()}
    for m, fp in (manifest.get("model_fingerprints") or {}).items():
        if m not in infos or infos[m].get("fingerprint") != fp:
            raise InputError(f"{manifest_path}: rater {m!r} has fingerprint {fp}, but the prepared model is "
                             f"{infos.get(m, {}).get('fingerprint')} ({info_paths.get(m)}); rerun select_subset")
    return infos


def dataset_card(*, dataset: str, method: str, proportion: str, license: str, source: dict[str, Any],
                 manifest: dict[str, Any], report: dict[str, Any], models: dict[str, dict[str, Any]],
                 infos: dict[str, dict[str, Any]], prompts: dict[str, str], score_levels: int,
                 score_columns: list[str], files: dict[str, str]) -> str:
    """README.md: the Hub's YAML header, then what the subset is, where it came from and how it was made."""
    n_sel, n_total = manifest["n_selected"], manifest["n_total"]
    cfg = manifest.get("config", {})
    name = f"{dataset} {method} {proportion}"
    header = yaml.safe_dump(card_header(name, n_sel, license, source, files), sort_keys=False, allow_unicode=True)
    counts = report.get("counts", {})
    used = manifest.get("model_fingerprints") or {}
    weights = cfg.get("weights") or {}
    settings = {k: v for k, v in cfg.items() if k not in ("method", "proportion")}
    lines = [
        "---", header.rstrip("\n"), "---", "",
        f"# {name}", "",
        f"{n_sel} of the {n_total} instruction-response pairs of `{dataset}` ({_source_line(source)}), selected by "
        f"method `{method}` at proportion {proportion} with a reproduction of SelectIT ({PAPER}): base LLMs rate every "
        f"pair 1..{score_levels} under several rating prompts; the probabilities of the score tokens, fused over "
        "prompts and raters, rank the pairs and the top share is kept.", "",
        "## Files", "",
        "| file | content |", "|---|---|",
        f"| `{files['subset']}` | the subset ({n_sel} rows; `id`, `instruction`, `input`, `output`), config `default` |",
        f"| `{FILES['alpaca']}` | the same rows as Alpaca JSON |",
        f"| `{files['scores']}` | all {n_total} samples with every score, config `scores` |", "",
        "```python", "from datasets import load_dataset", "",
        'subset = load_dataset("<this repo or folder>")            # the selected pairs',
        'scores = load_dataset("<this repo or folder>", "scores")  # every sample, every score level',
        "```", "",
        "## Source", "",
        f"- dataset: {_source_line(source)}, format `{report.get('format', source.get('format'))}`",
        f"- dataset fingerprint (sample ids in order): `{manifest.get('dataset_fingerprint')}`",
        f"- records read {counts.get('read')}, kept {counts.get('kept')}; "
        + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if k not in ("read", "kept")),
        f"- policies: " + ", ".join(f"`{k}: {json.dumps(v)}`" for k, v in (report.get("policies") or {}).items()),
        "",
        "## Selection", "",
        f"- method `{cfg.get('method', method)}`, proportion {cfg.get('proportion', proportion)}: "
        f"{n_sel} selected of {n_total}",
        "- settings (the subset manifest's): "
        + (", ".join(f"{k} `{json.dumps(v)}`" for k, v in settings.items()) or "none"),
        f"- score levels 1..{score_levels}; the raters below scored every sample (the `scores` config); "
        + (f"this selection read {', '.join(f'`{m}`' for m in used)}" if used else "this method reads no rater score"),
        "",
        "| rater | model | parameters | fingerprint | weight in this selection |", "|---|---|---|---|---|",
    ]
    for m, info in infos.items():
        lines.append(f"| {m} | {_rater_line(models.get(m, {}))} | {info.get('theta')} | `{info.get('fingerprint')}` "
                     f"| {weights.get(m, '') if m in used else ''} |")
    lines += ["", "Rating prompts (id: text):", ""]
    for pid in manifest.get("prompt_ids") or list(prompts):
        lines.append(f"- `{pid}`: {json.dumps(prompts.get(pid, '?'), ensure_ascii=False)}")
    for base in BASELINES:
        if base in manifest:
            lines += ["", f"Baseline `{base}`: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in manifest[base].items())]
    lines += [
        "", "## Score columns", "",
        "`token/<rater>/<prompt id>`: token-level score (Eq. 2-3); `sentence/<rater>`: sentence-level score over "
        "the prompts (Eq. 4); `token_r`, `sentence_r`, `model_r`: the Token-R, Sentence-R and Model-R baselines; "
        "`selectit`: the model-level score (Eq. 5); `ifd/...`, `judge/...`: those baselines' own scores; "
        "`selected`: in this subset.", "",
        "Columns: " + ", ".join(f"`{c}`" for c in score_columns), "",
        "## How it was made", "",
        f"`snakemake release` of the SelectIT pipeline (selectit {__version__}); package versions: "
        + ", ".join(f"{k} {v}" for k, v in (manifest.get("package_versions") or {}).items()) + ".",
        "The same config on the same data and raters (the fingerprints above) selects the same ids.", "",
        "## Citation", "",
        "```bibtex",
        "@article{liu2024selectit,",
        "  title={SelectIT: Selective Instruction Tuning for LLMs via Uncertainty-Aware Self-Reflection},",
        "  author={Liu, Liangxin and Liu, Xuebo and Wong, Derek F. and Li, Dongfang and Wang, Ziyi and Hu, Baotian "
        "and Zhang, Min},",
        "  journal={arXiv preprint arXiv:2402.16705},",
        "  year={2024}",
        "}",
        "```", "",
    ]
    return "\n".join(lines)


def make_release(*, subset_path: str | Path, manifest_path: str | Path, report_path: str | Path,
                 scores_path: str | Path, info_paths: dict[str, str | Path], folder: str | Path,
                 dataset: str, method: str, proportion: str,
                 license: str, source: dict[str, Any], models: dict[str, dict[str, Any]], prompts: dict[str, str],
                 score_levels: int, baselines: dict[str, str | Path] | None = None) -> dict[str, Any]:
    """Write the files and folders of FILES into the release folder of one subset; returns the counts written."""
    records, manifest = read_subset(subset_path, manifest_path)
    report = _read_json(report_path, "dataset report")
    infos = rater_infos(info_paths, manifest, manifest_path)
    scores = score_table(scores_path, manifest["selected_ids"], baselines, manifest.get("n_total"))
    subset = pa.Table.from_pylist(records, schema=pa.schema([(c, pa.string()) for c in ALPACA_COLUMNS]))
    folder = Path(folder)
    files = {k: write_split(t, folder / FILES[k]) for k, t in (("subset", subset), ("scores", scores))}
    with atomic_path(folder / FILES["alpaca"]) as tmp:
        shutil.copyfile(subset_path, tmp)
    card = dataset_card(dataset=dataset, method=method, proportion=proportion, license=license, source=source,
                        manifest=manifest, report=report, models=models, infos=infos, prompts=prompts,
                        score_levels=score_levels, score_columns=scores.column_names, files=files)
    write_text_atomic(folder / FILES["card"], card)  # last: the card marks the folder complete
    return {"n_selected": len(records), "n_scored": scores.num_rows}
