"""selectit.atomic: a file under its final name is complete; a failed write leaves the old file and no temp."""

import json
import sys

import pytest

from selectit.atomic import atomic_dir, atomic_path, write_json_atomic, write_text_atomic


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


def test_folder_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.bin").write_text("from an older model")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_dir(out) as tmp:
            (tmp / "weights.bin").write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in out.iterdir()] == ["stale.bin"]
    with atomic_dir(out) as tmp:
        assert not list(tmp.iterdir())
        (tmp / "weights.bin").write_text("new")
    assert [p.name for p in out.iterdir()] == ["weights.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def _fake_gguf_package(root, name, body):
    pkg = root / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text(body)
    sys.modules.pop(name, None)


def test_an_assembled_gguf_appears_only_when_complete(tmp_path, monkeypatch):
    from selectit.models import resolve_gguf

    monkeypatch.syspath_prepend(str(tmp_path))
    cache = tmp_path / "cache"
    _fake_gguf_package(tmp_path, "broken_gguf_pkg", (
        "from pathlib import Path\n"
        "def assemble(output_path, overwrite=False):\n"
        "    Path(output_path).write_bytes(b'GGUF half')\n"
        "    raise ValueError('sha256 did not match')\n"
    ))
    with pytest.raises(ValueError, match="sha256"):
        resolve_gguf({"package": "broken_gguf_pkg"}, cache_dir=cache)
    assert not list(cache.iterdir())

    _fake_gguf_package(tmp_path, "whole_gguf_pkg", (
        "from pathlib import Path\n"
        "def assemble(output_path, overwrite=False):\n"
        "    Path(output_path).write_bytes(b'GGUF whole')\n"
        "    return Path(output_path)\n"
    ))
    path = resolve_gguf({"package": "whole_gguf_pkg"}, cache_dir=cache)
    assert path == cache / "whole_gguf_pkg.gguf" and path.read_bytes() == b"GGUF whole"
    assert [p.name for p in cache.iterdir()] == ["whole_gguf_pkg.gguf"]
