"""The config schema (schemas/config.schema.yaml): the one home of every config key's type and default.

``validate`` checks a config against it and fills in the defaults in place, as Snakemake's ``validate`` does
(a property's ``default`` is set where the key is missing, at every level the config has), and names the key
of the first error. ``default`` reads one key's default, for code that gets a config that was not validated.
Standard library, PyYAML and jsonschema only: the rules import it at parse time.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from selectit.errors import InputError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas/config.schema.yaml"


@lru_cache(maxsize=1)
def config_schema() -> dict[str, Any]:
    """The schema, read once (callers must not modify it)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def node(*keys: str) -> dict[str, Any]:
    """The schema of a config key (``node("scoring", "alpha")``)."""
    out = config_schema()
    for key in keys:
        out = out["properties"][key]
    return out


def default(*keys: str) -> Any:
    """The schema's default of a config key (a copy: callers may modify it)."""
    return copy.deepcopy(node(*keys)["default"])


def defaults(*keys: str) -> dict[str, Any]:
    """The defaults of every key of a section that has one (``defaults("audit")``), as copies."""
    return {k: copy.deepcopy(v["default"]) for k, v in node(*keys)["properties"].items() if "default" in v}


def default_rater(config: dict[str, Any]) -> str:
    """The rater a key left null names (selection.ifd.model, the judge's model_dir, paper.tsne.model): the first
    in ``models``, as the schema's descriptions say."""
    return next(iter(config["models"]))


def _validator_class():
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def fill_then_check(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": fill_then_check})


def validate(config: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` against the schema and fill in its defaults (in place; also returned). InputError
    naming the key (``config rating.engine: ...``) of the most relevant error."""
    from jsonschema.exceptions import best_match

    errors = list(_validator_class()(config_schema()).iter_errors(config))  # consumed whole: fills every default
    error = best_match(errors)
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"config {key}: {error.message}")
    return config
