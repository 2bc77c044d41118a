"""selectit.atomic: a file under its final name is complete; a failed write leaves the old file and no temp."""

import json

import pytest

from selectit.atomic import atomic_path, write_json_atomic, write_text_atomic


def test_write_replaces_and_leaves_no_temp(tmp_path):
    out = tmp_path / "sub" / "a.json"
    write_json_atomic(out, {"x": "é", "n": 1}, indent=1)
    assert out.read_text(encoding="utf-8") == '{\n "x": "é",\n "n": 1\n}\n'
    write_text_atomic(out, "new")
    assert out.read_text() == "new"
    assert [p.name for p in out.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    out = tmp_path / "a.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(out) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_strict_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomic(tmp_path / "a.json", {"x": float("nan")}, allow_nan=False)
    assert not list(tmp_path.iterdir())
    write_json_atomic(tmp_path / "b.json", {"x": float("nan")})
    assert json.loads((tmp_path / "b.json").read_text(), parse_constant=str) == {"x": "NaN"}
