"""Model engines (``base.Engine``): what runs a model for rating, IFD, the judge and the benchmarks.

The registry: a name, the class that implements it, and why it may be unavailable here. Adding an engine (SGLang,
a remote server) is one module with an ``Engine`` subclass and one entry in ``ENGINES``; the schema's ``engine``
keys take their choices from this registry (``tests/test_engines.py`` keeps them equal).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selectit.errors import InputError


@dataclass(frozen=True)
class EngineEntry:
    name: str
    cls: str  # "module:Class"
    missing: str | None = None  # "module:function" returning why it cannot run here, or None
    setup: str | None = None  # the command that installs it

    def load(self) -> Any:
        module, _, attr = self.cls.partition(":")
        return getattr(importlib.import_module(module), attr)

    def why_missing(self) -> str | None:
        if not self.missing:
            return None
        module, _, attr = self.missing.partition(":")
        return getattr(importlib.import_module(module), attr)()


ENGINES = {e.name: e for e in (
    EngineEntry("hf", "selectit.engines.hf:HFEngine"),
    EngineEntry("vllm", "selectit.engines.vllm:VLLMEngine", "selectit.engines.vllm:missing", "make setup-vllm"),
)}
DEFAULT = "hf"


def entry(name: str, key: str = "engine") -> EngineEntry:
    if name not in ENGINES:
        raise InputError(f"{key}: unknown engine {name!r}; known: {', '.join(ENGINES)}")
    return ENGINES[name]


def check(name: str, key: str) -> None:
    """Stop with one message naming the config key and the install command where engine ``name`` cannot run."""
    why = entry(name, key).why_missing()
    if why:
        raise InputError(f"{key}: {name} is not installed here: {why}")


def numerics(engine: str, dtype: str | None) -> str | None:
    """A model job's numerics as one param value: the dtype alone for the default engine (the value those jobs had
    before the engine was a choice, so their outputs stand), ``<engine>:<dtype>`` for another. A change of either
    reruns the job (Snakemake compares params by value)."""
    return dtype if engine == DEFAULT else f"{engine}:{dtype}"


def parse_numerics(value: str | None) -> tuple[str, str | None]:
    """(engine, dtype) of a ``numerics`` value."""
    if value is not None and ":" in value:
        engine, _, dtype = value.partition(":")
        return engine, dtype
    return DEFAULT, value


def open_engine(name: str, model_dir: str | Path, **settings: Any):
    """Load ``model_dir`` with engine ``name`` (settings: dtype, threads, gpus, max_model_len, seed, model_name,
    device; each engine takes what applies to it)."""
    return entry(name).load().load(model_dir, **settings)
