"""Rating prompts: loading them as data, stable ids, and the exact rating-prompt string.

The string is byte-identical to the released code's: it reads the prompt file with
``readlines()`` (each line keeps its trailing newline, the last line may lack one) and builds
``line + "\\n" + "Instruction:" + instruction + "\\n" + "Response:" + response + "\\nThe answer is: \\n"``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from selectit.errors import InputError

ANSWER_TAIL = "\nThe answer is: \n"
MISSING_PROMPT = "<missing prompt file>"


@dataclass(frozen=True)
class RatingPrompt:
    """One rating prompt: its text exactly as the released code holds it (newline kept) and a stable id."""

    text: str
    position: int  # 1-based line number in the file / list

    @property
    def id(self) -> str:
        return prompt_id(self.text)


def prompt_id(text: str) -> str:
    """Stable id of a prompt: hash of its exact text (a trailing newline changes the prompt string, so it
    changes the id too)."""
    return "p" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


def build_rating_prompt(prompt_line: str, instruction: str, response: str) -> str:
    """The released code's prompt string, byte for byte."""
    if prompt_line.startswith(MISSING_PROMPT):
        path = prompt_line[len(MISSING_PROMPT):].rsplit("#", 1)[0]
        raise InputError(f"rating prompt file {path} does not exist; fetch or write it (see README), then rerun")
    return prompt_line + "\n" + "Instruction:" + instruction + "\n" + "Response:" + response + ANSWER_TAIL


def prompt_head(prompt_line: str) -> str:
    """The part of the rating prompt before the instruction text."""
    return prompt_line + "\n" + "Instruction:"


def load_prompts(source: str | Path | list[str]) -> list[RatingPrompt]:
    """Read rating prompts from a file (one per line, as ``readlines()`` gives them) or a list of strings."""
    if isinstance(source, list):
        lines = list(source)
        where = "config list 'prompts'"
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"rating prompt file {path} does not exist; set 'prompts' in the config to a file "
                             "with one rating prompt per line, or to a list of prompt strings")
        with open(path, encoding="utf-8", newline="") as fh:
            lines = fh.readlines()
        where = str(path)
    prompts = []
    for i, line in enumerate(lines, start=1):
        if not isinstance(line, str) or not line.strip():
            raise InputError(f"{where}: prompt {i} is empty; remove blank lines or fill them in")
        prompts.append(RatingPrompt(text=line, position=i))
    if not prompts:
        raise InputError(f"{where}: no rating prompts found")
    ids = [p.id for p in prompts]
    if len(set(ids)) != len(ids):
        dup = sorted({x for x in ids if ids.count(x) > 1})
        raise InputError(f"{where}: duplicated rating prompts (ids {dup}); each prompt must be distinct")
    return prompts


def select_prompts(prompts: list[RatingPrompt], k: int | None) -> list[RatingPrompt]:
    """Prompts 1..k (the released code uses the first K lines); k=None keeps all."""
    if k is None:
        return prompts
    if k < 1 or k > len(prompts):
        raise InputError(f"asked for {k} rating prompts but {len(prompts)} are available; "
                         f"set n_prompts between 1 and {len(prompts)}")
    return prompts[:k]


def cut_middle(ids: list[int], keep: int) -> list[int]:
    """The first ceil(keep / 2) and the last floor(keep / 2) ids: a long text loses its middle, not its ends."""
    if keep <= 0:
        return []
    head = (keep + 1) // 2
    tail = keep - head
    return ids[:head] + (ids[len(ids) - tail:] if tail else [])
