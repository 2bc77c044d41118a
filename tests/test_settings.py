"""The config settled once (selectit.settings, selectit.schema), tested without Snakemake: validation and
defaults, every cross-check naming its key, and what the rules derive from it."""

import json

import pytest
import yaml

from selectit import layout
from selectit.errors import InputError
from selectit.schema import validate
from selectit.settings import Settings

from .conftest import REPO


def _config(path="config.yaml", **changes):
    config = yaml.safe_load((REPO / path).read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # the configs name their data relative to the repository


@pytest.mark.parametrize("path", ["config.yaml", "configs/paper.yaml"])
def test_defaults_come_from_the_schema_as_snakemake_fills_them(path):
    from snakemake.utils import validate as snakemake_validate

    ours, theirs = _config(path), _config(path)
    assert Settings(ours).config is ours  # filled in place, as Snakemake's validate does: the rules read `config`
    snakemake_validate(theirs, str(REPO / "schemas/config.schema.yaml"))
    assert json.dumps(ours, sort_keys=True, default=str) == json.dumps(theirs, sort_keys=True, default=str)
    assert ours["rating"]["engine"] == "hf" and ours["evaluation"]["engine"] == "hf"  # schema defaults, filled


def test_a_filled_default_is_each_configs_own_copy():
    first, second = _config(), _config()
    del first["evaluation"]["benchmarks"], second["evaluation"]["benchmarks"]
    validate(first)
    first["evaluation"]["benchmarks"].append("mmlu")  # a rule editing its own config must not edit the schema's
    validate(second)
    assert second["evaluation"]["benchmarks"].count("mmlu") == 1


def test_a_schema_error_names_its_key():
    with pytest.raises(InputError, match=r"^config rating\.token_budget: 'many' is not of type 'integer'"):
        Settings(_config(rating__token_budget="many"))


@pytest.mark.parametrize("changes, message", [
    ({"selection__ifd__model": "nope"}, r"config selection\.ifd\.model: 'nope' is not a rater"),
    ({"selection__judge__model_dir": "results/models/x"}, r"config selection\.judge\.model_dir: results/models/x"),
    ({"training__methods": ["selectit-k9"]}, r"config training\.methods: method 'selectit-k9' asks for K=9"),
    ({"selection__methods": ["best"]}, r"config selection\.methods: unknown selection method 'best'"),
    ({"training__bases": {"big": {"rater": "llama"}}}, r"training base 'big' names rater 'llama'"),
    ({"evaluation__settings": {"gsm": {"n_shots": 8}}}, r"config evaluation\.settings\.gsm: unknown gsm setting"),
    ({"rating__engine": "tgi"}, r"config rating\.engine: unknown engine 'tgi'"),
    ({"training__bases": {}, "evaluation__benchmarks": ["superni"]}, r"config evaluation\.benchmarks: unknown"),
    ({"scoring__model_weights": {"smollm2": 1.0}}, r"gemma3"),
])
def test_a_config_that_would_stop_a_job_stops_here_naming_its_key(changes, message):
    with pytest.raises(InputError, match=message):
        Settings(_config(**changes))


def test_what_the_rules_derive():
    s = Settings(_config())
    assert list(s.models) == ["smollm2", "gemma3"] and len(s.prompts) == 5
    assert s.ifd["model"] == "smollm2"  # null: the first rater
    assert s.judge["model_dir"] == "results/models/smollm2" and s.judge_gpus() == 1
    assert s.judge_model() == ["results/models/smollm2/model.json"]
    shards = s.rating_shards("default")
    assert len(shards) == 2 * 5 * 1 and shards[0] == layout.RATING_SHARD.format(
        dataset="default", model="smollm2", prompt=s.prompts[0].id, shard="shard000")
    # the audit's canary set is rated as a dataset of its own, from its source's file
    assert s.canary_dataset("default") in s.audits and s.source_path(s.canary_dataset("default")) == s.source_path(
        "default")
    assert s.audit_targets() == [layout.AUDIT.format(dataset="default")]
    assert len(s.subset_targets()) == len(s.selection["methods"]) * len(s.selection["proportions"])
    assert s.train_targets() == [f"{layout.run_dir('train', 'smollm2', 'default', m, 0.2, 0)}/train_result.json"
                                 for m in sorted(["random", "selectit"])]
    assert len(s.eval_targets()) == 2 * len(s.evaluation["benchmarks"])
    assert s.select_settings("random") == {"seed": 0} and s.select_settings("selectit") == {}
    assert s.level_settings("token_r") == {"token_prompt": 1} and s.level_settings("selectit") == {}
    # levels_read: the configured levels, plus a sweep variant's own level and the level random_unselected reads
    assert s.levels_read(["selectit-alpha0.4", "random_unselected"]) == sorted(
        ["token_r", "sentence_r", "model_r", "selectit", "selectit-alpha0.4"])
    assert s.sentence_points(["selectit", "selectit-alpha0.4-k3"]) == [(3, "0.4"), (5, "0.2")]


def test_the_evaluation_engine_joins_the_settings_only_when_it_is_not_the_default(monkeypatch):
    assert "engine" not in Settings(_config()).eval_settings("gsm")  # results made before it was a choice
    monkeypatch.setenv("SELECTIT_VLLM_PYTHON", "/nonexistent/python")
    with pytest.raises(InputError, match=r"^config evaluation\.engine: vllm is not installed here"):
        Settings(_config(evaluation__engine="vllm"))
    monkeypatch.setattr("selectit.engines.check", lambda name, key: None)
    assert Settings(_config(evaluation__engine="vllm")).eval_settings("gsm")["engine"] == "vllm"


def test_an_openai_judge_needs_no_gpu_and_no_prepared_model():
    s = Settings(_config(selection__judge={"type": "openai", "model": "gpt-4"}))
    assert s.judge_gpus() == 0 and s.judge_model() == []


def test_scripts_read_only_what_their_rule_declares():
    """A script reads its job's input, output, params, log, wildcards, threads and resources, never the whole
    config: a setting it reads is then declared in its rule (a param reruns the job, a resource does not)."""
    import ast

    declared = {"input", "output", "params", "log", "wildcards", "threads", "resources", "rule"}
    for path in sorted((REPO / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "snakemake":
                assert node.attr in declared, f"{path.name} reads snakemake.{node.attr}"
