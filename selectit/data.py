"""Instruction data: read Alpaca / ShareGPT (LLMZoo) / chat ``messages`` records from JSON, JSONL, Parquet or
Hugging Face datasets, normalise,
validate with documented policies, and split into order-independent shards.

Normalised table columns: ``id`` (hash of the normalised instruction and response, so reordering the
file changes no id), ``index`` (position in the file), ``instruction``, ``response``, ``source``, plus
any extra string columns of the records (``category``, ``flaw`` in the embedded default data).

Policies (every one is counted in the report; nothing is dropped silently):
- a UTF-8 byte-order mark at the start of a JSON / JSONL file is skipped.
- malformed file (invalid JSON, a bad JSONL line, non-UTF-8 bytes, a record that is not an object,
  a missing instruction/output field, a list or object where text is expected): error naming the file,
  the record index and the problem.
- numbers or booleans where text is expected: ``non_string: coerce`` (default) converts them with
  ``str()`` and counts them; ``error`` stops.
- empty response (whitespace only): ``empty_response: drop`` (default) drops and lists the record
  indices; ``keep`` keeps them; ``error`` stops.
- duplicate records (same id): ``duplicates: drop`` (default) keeps the first and lists the rest;
  ``error`` stops.
- ShareGPT and ``messages`` records: the first user turn followed directly by an assistant turn is the
  sample; a ``system`` turn (and any later turn) is not part of the rated text. Records with no such pair:
  ``no_assistant_turn: drop`` (default, listed) or ``error``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from selectit.atomic import write_json_atomic, write_parquet_atomic
from selectit.canaries import make_canaries
from selectit.errors import InputError

FORMATS = ("auto", "alpaca", "sharegpt", "messages")
HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "model"}
CORE_COLUMNS = ["id", "index", "instruction", "response", "source"]


@dataclass
class DataPolicy:
    input_joiner: str = "\n"
    non_string: str = "coerce"  # coerce | error
    empty_response: str = "drop"  # drop | keep | error
    duplicates: str = "drop"  # drop | error
    no_assistant_turn: str = "drop"  # drop | error

    def __post_init__(self) -> None:
        allowed = {
            "non_string": ("coerce", "error"),
            "empty_response": ("drop", "keep", "error"),
            "duplicates": ("drop", "error"),
            "no_assistant_turn": ("drop", "error"),
        }
        for name, values in allowed.items():
            if getattr(self, name) not in values:
                raise InputError(f"data policy {name}={getattr(self, name)!r} is not one of {values}")


@dataclass
class DataReport:
    source: str
    format: str
    n_read: int = 0
    n_kept: int = 0
    coerced_non_string: list[dict[str, Any]] = field(default_factory=list)
    dropped_empty_response: list[int] = field(default_factory=list)
    kept_empty_response: list[int] = field(default_factory=list)
    dropped_duplicates: list[dict[str, Any]] = field(default_factory=list)
    dropped_no_assistant_turn: list[int] = field(default_factory=list)
    max_response_chars: int = 0

    def to_dict(self, policy: DataPolicy) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "policies": policy.__dict__,
            "counts": {
                "read": self.n_read,
                "kept": self.n_kept,
                "coerced_non_string": len(self.coerced_non_string),
                "dropped_empty_response": len(self.dropped_empty_response),
                "kept_empty_response": len(self.kept_empty_response),
                "dropped_duplicates": len(self.dropped_duplicates),
                "dropped_no_assistant_turn": len(self.dropped_no_assistant_turn),
            },
            "max_response_chars": self.max_response_chars,
            "details": {
                "coerced_non_string": self.coerced_non_string,
                "dropped_empty_response": self.dropped_empty_response,
                "kept_empty_response": self.kept_empty_response,
                "dropped_duplicates": self.dropped_duplicates,
                "dropped_no_assistant_turn": self.dropped_no_assistant_turn,
            },
        }


def sample_id(instruction: str, response: str) -> str:
    """Stable id of a sample from its normalised text."""
    digest = hashlib.sha256((instruction + "\x1f" + response).encode("utf-8")).hexdigest()
    return "s" + digest[:16]


# --------------------------------------------------------------------------------------------- reading


def _decode(path: Path) -> str:
    raw = path.read_bytes()
    try:
        # a leading byte-order mark (Windows editors write one) is not part of the JSON; error offsets stay in bytes
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            f"{path}: not valid UTF-8 at byte {exc.start} (line {line}): {exc.reason}; "
            "re-encode the file as UTF-8"
        ) from None


def read_records(path: str | Path) -> list[Any]:
    """Raw records of a JSON list, a JSONL file or a Parquet file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"dataset file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        # Python lists and dicts (pandas would give numpy arrays for list columns such as `messages`)
        return pq.read_table(path).to_pylist()
    text = _decode(path)
    if suffix == ".jsonl":
        records = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {line_no} is not valid JSON ({exc.msg} at column {exc.colno})") from None
        return records
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def read_hf_dataset(name: str, revision: str | None, split: str = "train") -> list[Any]:
    """Records of a Hugging Face Hub dataset (needs internet or a populated local cache)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, revision=revision, split=split)
    except Exception as exc:  # the hub client raises many types; the message is what matters
        raise InputError(
            f"could not load Hugging Face dataset {name!r} (revision {revision!r}, split {split!r}): {exc}. "
            "Without internet, download it once elsewhere or point 'path' at a local JSON/JSONL/Parquet file."
        ) from None
    return list(ds)


def detect_format(records: list[Any], where: str) -> str:
    for rec in records:
        if isinstance(rec, dict):
            if "conversations" in rec:
                return "sharegpt"
            if "messages" in rec:
                return "messages"
            if "instruction" in rec:
                return "alpaca"
    raise InputError(f"{where}: cannot tell the format: no record has 'instruction' (Alpaca), "
                     "'conversations' (ShareGPT) or 'messages' (chat); set 'format' in the dataset config")


# ----------------------------------------------------------------------------------------- normalising


class _Normaliser:
    def __init__(self, where: str, policy: DataPolicy, report: DataReport):
        self.where, self.policy, self.report = where, policy, report

    def text(self, value: Any, index: int, name: str, required: bool = True) -> str:
        if value is None:
            if required:
                raise InputError(f"{self.where}: record {index}: field '{name}' is missing")
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, (bool, int, float)) and self.policy.non_string == "coerce":
            self.report.coerced_non_string.append({"index": index, "field": name, "type": type(value).__name__})
            return str(value)
        raise InputError(f"{self.where}: record {index}: field '{name}' must be text, got "
                         f"{type(value).__name__} ({str(value)[:60]!r})")

    def alpaca(self, rec: dict[str, Any], index: int) -> tuple[str, str] | None:
        for key in ("instruction", "output"):
            if key not in rec:
                raise InputError(f"{self.where}: record {index}: field '{key}' is missing "
                                 f"(Alpaca records need 'instruction' and 'output'; found {sorted(rec)})")
        instruction = self.text(rec["instruction"], index, "instruction")
        extra = self.text(rec.get("input"), index, "input", required=False)
        if extra.strip():
            instruction = instruction + self.policy.input_joiner + extra
        return instruction, self.text(rec["output"], index, "output")

    def sharegpt(self, rec: dict[str, Any], index: int) -> tuple[str, str] | None:
        return self._chat(rec, index, "conversations", "from", "value")

    def messages(self, rec: dict[str, Any], index: int) -> tuple[str, str] | None:
        return self._chat(rec, index, "messages", "role", "content")

    def _chat(self, rec: dict[str, Any], index: int, key: str, role: str, content: str) -> tuple[str, str] | None:
        turns = rec.get(key)
        if not isinstance(turns, list):
            raise InputError(f"{self.where}: record {index}: '{key}' must be a list of turns")
        for pos, turn in enumerate(turns):
            if not isinstance(turn, dict) or role not in turn or content not in turn:
                raise InputError(f"{self.where}: record {index}: turn {pos} needs '{role}' and '{content}'")
        # The first human turn followed directly by an assistant turn is our choice; the released code reads
        # conversations[0] and [1] whatever their roles, which for SlimOrca would rate the system turn as the
        # instruction.
        for pos in range(len(turns) - 1):
            if str(turns[pos][role]).lower() in HUMAN_ROLES and str(turns[pos + 1][role]).lower() in ASSISTANT_ROLES:
                return (self.text(turns[pos][content], index, f"{key}[{pos}].{content}"),
                        self.text(turns[pos + 1][content], index, f"{key}[{pos + 1}].{content}"))
        if self.policy.no_assistant_turn == "error":
            raise InputError(f"{self.where}: record {index}: no human turn followed by an assistant turn")
        self.report.dropped_no_assistant_turn.append(index)
        return None


def normalise(records: list[Any], where: str, fmt: str = "auto", policy: DataPolicy | None = None,
              source: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Validate and normalise raw records; returns the sample table and the report dict."""
    policy = policy or DataPolicy()
    if fmt not in FORMATS:
        raise InputError(f"{where}: unknown format {fmt!r}; expected one of {FORMATS}")
    if not records:
        raise InputError(f"{where}: the dataset has no records")
    fmt = detect_format(records, where) if fmt == "auto" else fmt
    report = DataReport(source=source or where, format=fmt, n_read=len(records))
    norm = _Normaliser(where, policy, report)
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"{where}: record {index} is a {type(rec).__name__}, not an object")
        pair = getattr(norm, fmt)(rec, index)
        if pair is None:
            continue
        instruction, response = pair
        if not response.strip():
            if policy.empty_response == "error":
                raise InputError(f"{where}: record {index}: the response is empty")
            if policy.empty_response == "drop":
                report.dropped_empty_response.append(index)
                continue
            report.kept_empty_response.append(index)
        sid = sample_id(instruction, response)
        if sid in seen:
            if policy.duplicates == "error":
                raise InputError(f"{where}: record {index} duplicates record {seen[sid]}")
            report.dropped_duplicates.append({"index": index, "duplicate_of": seen[sid], "id": sid})
            continue
        seen[sid] = index
        row = {"id": sid, "index": index, "instruction": instruction, "response": response,
               "source": source or where}
        for key in ("category", "flaw"):
            if key in rec:
                row[key] = None if rec[key] is None else str(rec[key])
        rows.append(row)
        report.max_response_chars = max(report.max_response_chars, len(response))
    report.n_kept = len(rows)
    if not rows:
        raise InputError(f"{where}: no usable records remain after validation ({report.to_dict(policy)['counts']})")
    table = pd.DataFrame(rows)
    table["index"] = table["index"].astype("int64")
    return table, report.to_dict(policy)


def load_dataset_table(spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load one dataset from its config entry: {path | hf_name (+ revision, split), format, policies...}, or
    an audit's canary set (`canary_table`)."""
    if spec.get("canaries_of"):  # an audit's canary set (selectit.audit.audit_datasets)
        return canary_table(spec)
    policy = DataPolicy(**{k: spec[k] for k in DataPolicy.__dataclass_fields__ if k in spec})
    if spec.get("path"):
        records = read_records(spec["path"])
        where = str(spec["path"])
    elif spec.get("hf_name"):
        records = read_hf_dataset(spec["hf_name"], spec.get("revision"), spec.get("split", "train"))
        where = f"hf://{spec['hf_name']}@{spec.get('revision')}"
    else:
        raise InputError("a dataset needs 'path' (a local file) or 'hf_name' (a Hugging Face dataset)")
    return normalise(records, where, spec.get("format", "auto"), policy)


def canary_table(spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The canary set of an audit spec (selectit.audit.audit_datasets: ``canaries_of``, ``source``, ``n``,
    ``seed``, ``kinds``): the canaries (selectit.canaries) of its source dataset."""
    table, _ = load_dataset_table(spec["source"])
    where = spec["source"].get("path") or f"hf://{spec['source'].get('hf_name')}"
    return make_canaries(table, int(spec["n"]), int(spec["seed"]), spec["kinds"], where=str(where))


# --------------------------------------------------------------------------------------------- shards


def shard_names(n_shards: int) -> list[str]:
    return [f"shard{i:03d}" for i in range(n_shards)]


def shard_of(ids: pd.Series, n_shards: int) -> pd.Series:
    """Shard number of each sample from its id hash: independent of record order and of other records."""
    return ids.map(lambda s: int(hashlib.sha256(s.encode()).hexdigest()[:8], 16) % n_shards)


def split_shards(table: pd.DataFrame, n_shards: int) -> dict[str, pd.DataFrame]:
    if n_shards < 1:
        raise InputError(f"n_shards must be >= 1, got {n_shards}")
    numbers = shard_of(table["id"], n_shards)
    names = shard_names(n_shards)
    return {
        names[i]: table[numbers == i].sort_values("id").reset_index(drop=True)
        for i in range(n_shards)
    }


def fingerprint_table(table: pd.DataFrame) -> str:
    """Content hash of the sample ids in order (the dataset fingerprint in manifests)."""
    return hashlib.sha256("\n".join(table["id"]).encode()).hexdigest()[:16]


SHARD_COLUMNS = ["id", "instruction", "response"]


def prepare_samples(spec: dict[str, Any], samples_path: str | Path, report_path: str | Path) -> dict[str, Any]:
    """Normalise + validate a dataset; write the sample table and the report (counts of every policy)."""
    import pyarrow as pa

    table, report = load_dataset_table(spec)
    report["fingerprint"] = fingerprint_table(table)
    if spec.get("n_shards"):
        numbers = shard_of(table["id"], int(spec["n_shards"]))
        names = shard_names(int(spec["n_shards"]))
        report["shard_sizes"] = {names[i]: int((numbers == i).sum()) for i in range(len(names))}
    write_parquet_atomic(pa.Table.from_pandas(table, preserve_index=False), samples_path)
    write_json_atomic(report_path, report, indent=1)
    return report


def write_shard(samples_path: str | Path, n_shards: int, shard: str, out_path: str | Path) -> int:
    """Write one shard: only order-independent columns (id, instruction, response), sorted by id, and no
    pandas metadata, so an unchanged shard is byte-identical after other records are added."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(samples_path).to_pandas()
    names = shard_names(n_shards)
    if shard not in names:
        raise InputError(f"shard {shard!r} does not exist for n_shards={n_shards}")
    part = split_shards(table, n_shards)[shard][SHARD_COLUMNS]
    write_parquet_atomic(pa.Table.from_pandas(part, preserve_index=False).replace_schema_metadata(None), out_path)
    return len(part)


def load_shard(spec: dict[str, Any], shard: str) -> pd.DataFrame:
    """The rows of one shard (id, instruction, response; sorted by id), normalised from the source.

    Rating jobs read their shard this way rather than from a file written by an upstream job: Snakemake
    stops checking the params of jobs downstream of a job that reruns, so an upstream rewrite would either
    re-rate every shard or hide membership changes. Reading the source keeps "records added -> only the
    shards whose membership changed are re-rated" exact."""
    n_shards = int(spec["n_shards"])
    if shard not in shard_names(n_shards):
        raise InputError(f"shard {shard!r} does not exist for n_shards={n_shards}")
    table, _ = load_dataset_table(spec)
    return split_shards(table, n_shards)[shard][SHARD_COLUMNS]
