"""The per-stage conda environments pin the same versions as pyproject.toml, and every rule names one."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pyproject_pins():
    text = (REPO / "pyproject.toml").read_text()
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', text))


def test_env_pins_agree_with_pyproject():
    pins = pyproject_pins()
    # the vLLM engine's environment is apart from pyproject's: its pin is the Makefile's VLLM_VERSION
    pins["vllm"] = re.search(r"^VLLM_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.M)[1]
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert len(envs) >= 5
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        assert "python=3.11" in spec["dependencies"]
        for entry in pip:
            name, _, version = entry.partition("==")
            if version:
                assert pins.get(name) == version, f"{env.name}: {name}=={version} but pyproject pins {pins.get(name)}"


def test_every_rule_has_a_conda_env_that_exists():
    for rules in (REPO / "rules").glob("*.smk"):
        text = rules.read_text()
        # every rule that runs something (a script or shell), not the target rules that only gather inputs
        blocks = re.split(r"^(?=(?:rule|checkpoint) \w+:)", text, flags=re.M)[1:]
        n_rules = sum(bool(re.search(r"^    (?:script|shell|run):", b, flags=re.M)) for b in blocks)
        envs = re.findall(r'conda:\n\s+"\.\./(envs/[a-z_]+\.yaml)"', text)
        assert len(envs) == n_rules, f"{rules.name}: {n_rules} rules but {len(envs)} conda envs"
        for env in envs:
            assert (REPO / env).is_file()
