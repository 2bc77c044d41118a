"""Bad configs, models and data give one clear message (no traceback as the only message)."""

import subprocess
import sys

import pytest
import yaml

from selectit.errors import InputError
from tests.workflow_helpers import REPO, snakemake, write_tiny_config


def test_unknown_model_path_names_it(tmp_path):
    from selectit.models import load_source

    with pytest.raises(InputError, match=r"model 'ghost': could not load .*does-not-exist"):
        load_source("ghost", {"hf": str(tmp_path / "does-not-exist")})


def test_hub_id_without_internet_is_a_clear_error(monkeypatch):
    from selectit.models import load_source

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="a hub id needs internet"):
        load_source("llama", {"hf": "meta-llama/Llama-2-7b-hf"})


def test_model_spec_needs_exactly_one_source():
    from selectit.models import check_spec

    with pytest.raises(InputError, match="exactly one of"):
        check_spec("m", {"hf": "a", "gguf": "b"})


@pytest.mark.parametrize("edit, message", [
    ({"scoring__alpah": 0.2}, "alpah"),
    ({"selection__proportions": [1.5]}, "1.5"),
    ({"selection__proportions": [0]}, "0"),
    ({"scoring__alpha": -0.1}, "-0.1"),
])
def test_bad_config_values_stop_before_any_job(tmp_path, tiny_models, edit, message):
    write_tiny_config(tmp_path, {"tinya": tiny_models["tinya"]}, **edit)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert message in out and "schema" in out.lower()


def test_k_larger_than_prompt_file(tmp_path, tiny_models):
    write_tiny_config(tmp_path, {"tinya": tiny_models["tinya"]}, n_prompts=5)
    proc = snakemake(tmp_path, "-n", check=False)
    assert proc.returncode != 0 and "asked for 5 rating prompts but 2 are available" in proc.stdout + proc.stderr


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    proc = subprocess.run([sys.executable, "-m", "selectit", "prepare-data", "--data", str(bad), "--out-dir",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "bad.json: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
