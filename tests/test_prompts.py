"""Rating prompts are byte-identical to the released code's string."""

from pathlib import Path

import pytest

from selectit.errors import InputError
from selectit.prompts import build_rating_prompt, load_prompts, select_prompts

RELEASED = Path(__file__).resolve().parents[2] / "shared" / "data" / "selectit" / "rating_prompt.txt"
needs_released = pytest.mark.skipif(not RELEASED.is_file(), reason="../shared/data not present")


def released_prompt(line, instruction, response):
    """The released code's expression, spelled out."""
    return line + "\n" + "Instruction:" + instruction + "\n" + "Response:" + response + "\nThe answer is: \n"


@needs_released
def test_byte_identity_against_released_file():
    with open(RELEASED, encoding="utf-8") as fh:
        lines = fh.readlines()
    prompts = load_prompts(RELEASED)
    assert len(prompts) == 9
    for line, prompt in zip(lines, prompts):
        got = build_rating_prompt(prompt.text, "Add 2 and 3.", "5")
        assert got.encode() == released_prompt(line, "Add 2 and 3.", "5").encode()
    # lines 1-8 keep their newline, so the prompt has a blank line after them; line 9 has none
    assert build_rating_prompt(prompts[0].text, "i", "r").startswith(lines[0] + "\nInstruction:i")
    assert "\n\n" in build_rating_prompt(prompts[0].text, "i", "r")
    assert "\n\n" not in build_rating_prompt(prompts[8].text, "i", "r")


def test_ids_stable_and_distinct(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("Rate A.\nRate B.\n")
    a = load_prompts(f)
    f.write_text("Rate B.\nRate A.\n")
    b = load_prompts(f)
    assert {p.id for p in a} == {p.id for p in b}
    assert a[0].id != a[1].id


def test_empty_missing_and_k_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_prompts(tmp_path / "nope.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(InputError, match="no rating prompts"):
        load_prompts(empty)
    blank = tmp_path / "blank.txt"
    blank.write_text("Rate.\n\nRate again.\n")
    with pytest.raises(InputError, match="prompt 2 is empty"):
        load_prompts(blank)
    ok = load_prompts(["a\n", "b\n", "c"])
    assert len(select_prompts(ok, 2)) == 2
    with pytest.raises(InputError, match="asked for 5 rating prompts but 3"):
        select_prompts(ok, 5)
