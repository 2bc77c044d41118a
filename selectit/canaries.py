"""Canaries: corrupted copies of a dataset's records, the bad data the selection audit (selectit.audit) plants.

`make_canaries` draws a seeded sample of n records of a sample table and makes one corrupted copy of each,
dealing the corruption kinds (CORRUPTIONS) in turn. An audit's canary set is a dataset of its own
(selectit.audit.audit_datasets; built by selectit.data.load_dataset_table from its source); such a table
carries a ``canary_of`` column (`is_canary_table`) and is never selected, trained or released.

Pure (NumPy, pandas): the data loader and the audit both import it, and it imports neither.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from selectit.errors import InputError

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


def sentences(text: str) -> list[str]:
    """The sentences of a text (split after . ! or ? and whitespace), as the shuffled corruption sees them."""
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
    parts = sentences(rec["response"])
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
                           lambda r: len(sentences(r["response"])) >= 3, _shuffle),
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


def is_canary_table(samples: pd.DataFrame) -> bool:
    """Whether a sample table is an audit's canary set (it has a ``canary_of`` column)."""
    return "canary_of" in samples.columns
