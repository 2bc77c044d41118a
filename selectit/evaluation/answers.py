"""Answer extraction and exact-match scoring as open-instruct's GSM and BBH evaluators do them.

- GSM8K (open-instruct ``eval/gsm/run_eval.py``): the reference is the text after ``####`` with
  thousands separators removed (``re.sub(r"(\\d),(\\d)", r"\\1\\2", ...)``); the prediction is the
  *last* number in the generation (same comma removal, numbers matched by
  ``[-+]?\\d*\\.\\d+|\\d+``), or the whole generation when it holds no number.
- BBH (open-instruct ``eval/bbh/run_eval.py``, the version with the vLLM path that SelectIT's
  scripts call): the prediction is the first ``[t|T]he answer is (.*?)\\.`` match, stripped, or the
  stripped generation when there is none.
- Both score with Hugging Face ``evaluate``'s ``exact_match`` with ``ignore_case=True`` and
  ``ignore_punctuation=True``: lower-case, delete every ``string.punctuation`` character, then
  compare the strings for equality (whitespace is *not* stripped).

The regular expressions are kept exactly as the protocol has them, quirks included (the ``|`` inside
``[t|T]``; "3.5" and "35" match once punctuation is removed), so that our numbers are comparable.
"""

from __future__ import annotations

import re
import string

_COMMA_IN_NUMBER = re.compile(r"(\d),(\d)")
_NUMBER = re.compile(r"[-+]?\d*\.\d+|\d+")
_BBH_ANSWER = re.compile(r"[t|T]he answer is (.*?)\.")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def remove_number_commas(text: str) -> str:
    """``1,234`` -> ``1234`` (one left-to-right pass, as open-instruct does)."""
    return _COMMA_IN_NUMBER.sub(r"\1\2", text)


def gsm_reference(answer_field: str) -> str:
    """The gold answer of a GSM8K record: the text after ``####``, commas in numbers removed."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer has no '####' marker: {answer_field[-80:]!r}")
    return remove_number_commas(answer_field.split("####")[1].strip())


def extract_gsm_answer(generation: str) -> str:
    """The last number in a chain-of-thought generation; the generation itself if it has none."""
    text = remove_number_commas(generation)
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else text


def extract_bbh_answer(generation: str) -> str:
    """What follows the first "the answer is" up to the next period; else the stripped generation."""
    match = _BBH_ANSWER.search(generation)
    return match.group(1).strip() if match else generation.strip()


def normalize_em(text: str, ignore_case: bool = True, ignore_punctuation: bool = True) -> str:
    """The normalisation of ``evaluate``'s exact_match (lower-case, drop ASCII punctuation)."""
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(_PUNCT_TABLE)
    return text


def exact_match(prediction: str, reference: str, ignore_case: bool = True, ignore_punctuation: bool = True) -> bool:
    return normalize_em(prediction, ignore_case, ignore_punctuation) == normalize_em(
        reference, ignore_case, ignore_punctuation
    )
