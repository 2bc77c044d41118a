"""Rating prompts: loading them as data, stable ids, the exact rating-prompt string, and a row's token ids under it
(``encode_row``, with middle truncation) and the score tokens a rater reads (``score_token_ids``).

The string is byte-identical to the released code's: it reads the prompt file with
``readlines()`` (each line keeps its trailing newline, the last line may lack one) and builds
``line + "\\n" + "Instruction:" + instruction + "\\n" + "Response:" + response + "\\nThe answer is: \\n"``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def score_token_ids(tokenizer: Any, k: int, model_name: str = "model") -> list[int]:
    """Id of the token that encodes digit j after a newline, for j = 1..k.

    It is the last token of tokenize("\\n" + "j"), which must decode to exactly "j". A digit that is
    not a single token stops with an error naming the model and the digit.
    """
    if not 2 <= k <= 9:
        raise InputError(f"K (number of score levels) must be between 2 and 9, got {k}")
    ids = []
    for digit in range(1, k + 1):
        pieces = tokenizer("\n" + str(digit), add_special_tokens=False)["input_ids"]
        token = pieces[-1] if pieces else None
        if token is None or tokenizer.decode([token]) != str(digit):
            decoded = [tokenizer.decode([t]) for t in pieces]
            raise InputError(
                f"model {model_name!r}: the digit {digit} is not a single token after a newline "
                f"(tokenised as {decoded}); SelectIT needs single-token scores 1..{k}"
            )
        ids.append(int(token))
    if len(set(ids)) != k:
        raise InputError(f"model {model_name!r}: score tokens are not distinct: {ids}")
    return ids


@dataclass
class EncodedRow:
    position: int  # row position in the shard
    input_ids: list[int]
    truncated: bool


def encode_row(tokenizer: Any, prompt: RatingPrompt, instruction: str, response: str,
               max_length: int) -> tuple[list[int], bool]:
    """Token ids of the rating prompt; if longer than max_length, cut the middle of the response (then of
    the instruction), never the rating-prompt head nor the "The answer is: \\n" tail."""
    ids = tokenizer(build_rating_prompt(prompt.text, instruction, response))["input_ids"]
    if len(ids) <= max_length:
        return ids, False
    # Encode the pieces separately so the fixed parts are kept whole.
    head = tokenizer(prompt.text + "\n" + "Instruction:")["input_ids"]
    instr = tokenizer(instruction, add_special_tokens=False)["input_ids"]
    mid = tokenizer("\n" + "Response:", add_special_tokens=False)["input_ids"]
    resp = tokenizer(response, add_special_tokens=False)["input_ids"]
    tail = tokenizer(ANSWER_TAIL, add_special_tokens=False)["input_ids"]
    fixed = len(head) + len(mid) + len(tail)
    budget = max_length - fixed
    if budget < 2:
        raise InputError(f"max_length={max_length} is too small for the rating prompt itself ({fixed} tokens)")
    instr_keep = min(len(instr), max(budget // 4, budget - len(resp)))
    resp_keep = budget - instr_keep
    return head + cut_middle(instr, instr_keep) + mid + cut_middle(resp, resp_keep) + tail, True
