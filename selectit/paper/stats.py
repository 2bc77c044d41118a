"""Data statistics shown in the paper's analysis: average length and share of calculation instructions.

Definitions (ours; the paper does not state them):
- length of a sample: whitespace-separated words of its instruction (with input) plus its response;
- a calculation instruction asks for arithmetic. Only its first line is looked at (the task, not an input
  passage). It counts when it holds an arithmetic expression (two numbers joined by + * x × / ÷ ^, or by - with
  spaces around it, so dates, scores and phone numbers do not count), or a calculation cue (calculate, compute,
  solve, how many, how far, what percentage, square root, average, interest, probability, divisor ...) together
  with a number, and it does not ask for code (function, program, script, code).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_NUMBER = r"\d+(?:[.,]\d+)?"
_EXPRESSION = re.compile(rf"{_NUMBER}\s*(?:[+*/^×÷x]|\s-\s)\s*{_NUMBER}")
_VERB = re.compile(r"\b(?:calculat\w*|comput\w*|evaluat\w*|solve\w*|sum|add|subtract\w*|multipl\w*|divi\w*|"
                   r"convert\w*|how many|how much|how far|how long|percent\w*|square root|squared|cubed|average|"
                   r"mean|interest|probability|total|area|perimeter|volume|speed|cost|price)\b", re.IGNORECASE)
_CODE = re.compile(r"\b(?:function|program|script|code|python|javascript|sql)\b", re.IGNORECASE)
_HAS_NUMBER = re.compile(r"\d")


def sample_length(instruction: str, response: str) -> int:
    """Words (whitespace-separated) of the instruction and the response together."""
    return len(instruction.split()) + len(response.split())


def is_calculation(instruction: str) -> bool:
    """Whether an instruction asks for arithmetic (see the module docstring)."""
    task = instruction.strip().split("\n", 1)[0]
    if _CODE.search(task):
        return False
    if _EXPRESSION.search(task):
        return True
    return bool(_VERB.search(task) and _HAS_NUMBER.search(task))


def mean_length(instructions: Iterable[str], responses: Iterable[str]) -> float:
    lengths = [sample_length(i, r) for i, r in zip(instructions, responses, strict=True)]
    return sum(lengths) / len(lengths) if lengths else float("nan")


def calculation_share(instructions: Iterable[str]) -> float:
    """Percent of instructions that are calculation instructions."""
    flags = [is_calculation(i) for i in instructions]
    return 100.0 * sum(flags) / len(flags) if flags else float("nan")
