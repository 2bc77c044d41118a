"""The configuration, settled once: ``Settings(config)`` validates a config against the schema (filling its
defaults from the schema alone, in place), runs every cross-check that would otherwise stop a job later, and
derives what the rules need: the datasets and the audit's canary sets, the raters and their prompts, the
methods' settings, the IFD and judge settings, the training bases and the evaluations, and the targets of each
stage. rules/common.smk builds one at parse time and keeps only input functions over it, so a bad config stops
``snakemake -n`` with one message naming its key, and all of this is tested without Snakemake
(tests/test_settings.py).
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

from selectit import audit, engines, layout, methods, resources
from selectit.data import shard_names
from selectit.errors import InputError
from selectit.evaluation import check_benchmarks
from selectit.evaluation.cli import check_evaluation, check_settings, data_files
from selectit.fusion import resolve_weights
from selectit.judge import judge_settings
from selectit.models import rater_gpus
from selectit.schema import default_rater, validate
from selectit.training import base_settings
from selectit.workflow import rating_prompts, shard_hashes


def prepared_model_name(folder: Any) -> str | None:
    """The model a folder results/models/<name>[/...] is prepared for, else None (a folder elsewhere)."""
    prefix = layout.MODEL_DIR.format(model="")
    folder = str(folder)
    return folder.removeprefix(prefix).partition("/")[0] if folder.startswith(prefix) else None


def model_source(spec: dict[str, Any]) -> dict[str, Any]:
    """What prepare_model builds a model from: its spec without `gpus` (a run setting, which re-prepares nothing)."""
    return {k: v for k, v in spec.items() if k != "gpus"}


class Settings:
    """One config, validated, checked and resolved (see the module's doc)."""

    def __init__(self, config: dict[str, Any]):
        self.config = validate(config)
        self.datasets: dict[str, Any] = config["datasets"]
        # The audit's canary sets (selectit.audit), one per audited dataset: rated like a dataset under their own
        # name and path, never selected, trained or released.
        self.audits = audit.audit_datasets(config)
        self.models: dict[str, Any] = config["models"]
        self.prompts = rating_prompts(config)
        self.prompt_by_id = {p.id: p for p in self.prompts}
        self.selection: dict[str, Any] = config["selection"]
        self.training: dict[str, Any] = config["training"]
        self.evaluation: dict[str, Any] = config["evaluation"]
        self.bases: dict[str, Any] = self.training["bases"]
        # What runs the raters, IFD and a local judge (selectit.engines), as the one param value of their numerics.
        self.rating_numerics = engines.numerics(config["rating"]["engine"], config["rating"]["dtype"])
        engines.check(config["rating"]["engine"], "config rating.engine")
        self.ifd = {**self.selection["ifd"], "model": self.selection["ifd"].get("model") or default_rater(config)}
        self.judge = judge_settings(self.selection.get("judge"), default_rater(config))
        self._check_baselines()
        self._check_methods()
        # The selection settings a method may depend on (selectit.methods.Kind.settings): its select job's params.
        self.select_values = {"seed": self.selection["seed"], "threshold": self.judge["threshold"]}
        # The level settings (Kind.level_settings): the level_scores job's params (token_r, model_r only).
        self.level_values = {"token_prompt": methods.token_prompt(config)}
        resolve_weights(list(self.models), {m: 1.0 for m in self.models}, config["scoring"]["model_weights"])
        self.audit_settings = audit.audit_settings(config)
        self.audit_plans = {spec["canaries_of"]: audit.plan(config, spec["canaries_of"])
                            for spec in self.audits.values()}
        self._check_bases()
        # With data_dir resources/eval the evaluations read the files rules/resources.smk downloads.
        self.eval_downloads = (resources.files_for(self.evaluation["benchmarks"])
                               if resources.is_download_dir(self.evaluation["data_dir"]) else [])
        self._check_evaluation()
        # Every model prepare_model can build: the raters and the bases that give their own spec.
        self.model_specs = {
            **{b: self.base_model_spec(b) for b, spec in self.bases.items() if "rater" not in spec},
            **{m: model_source(spec) for m, spec in self.models.items()},
        }
        judge = (self.evaluation["settings"].get("alpaca_eval") or {}).get("judge") or {}
        judge_dir = str(judge.get("model_dir") or "").rstrip("/")
        if prepared_model_name(judge_dir) is not None and prepared_model_name(judge_dir) not in self.model_specs:
            raise InputError(f"the AlpacaEval judge {judge_dir} is not a rater or training base of this config")

    # ------------------------------------------------------------------------------------------ checks
    # Everything that would stop a job later stops at parse time, with the key that holds it.
    def _check_baselines(self) -> None:
        if self.ifd["model"] not in self.models:
            raise InputError(f"config selection.ifd.model: {self.ifd['model']!r} is not a rater in models "
                             f"{list(self.models)}")
        prepared = set(self.models) | {b for b, spec in self.bases.items() if "rater" not in spec}
        judge_model = prepared_model_name(self.judge.get("model_dir") or "")
        if self.judge["type"] == "hf" and judge_model is not None and judge_model not in prepared:
            raise InputError(f"config selection.judge.model_dir: {self.judge['model_dir']} is not a rater or "
                             "training base of this config")

    def _check_methods(self) -> None:
        """Every configured method name resolves: a bad name or a K above n_prompts (or a K the released variant
        cannot replay) stops with the key that holds it."""
        paper = self.config.get("paper") or {}
        for key, names in [("n_prompts (the levels fuse_scores gathers)", methods.LEVELS),
                           ("selection.methods", self.selection["methods"]),
                           ("training.methods", self.training["methods"]),
                           *((f"paper.{k}", paper.get(k) or []) for k in ("methods", "strategies", "other_methods"))]:
            for name in names:
                try:
                    methods.resolve(name, self.config)
                except InputError as exc:
                    raise InputError(f"config {key}: {exc}") from None

    def _check_bases(self) -> None:
        for base, spec in self.bases.items():
            if "rater" in spec and spec["rater"] not in self.models:
                raise InputError(f"training base {base!r} names rater {spec['rater']!r}, which is not in models")
            if "rater" not in spec and base in self.models and \
                    self.base_model_spec(base) != model_source(self.models[base]):
                raise InputError(f"training base {base!r} has the name of a rater but another spec; use "
                                 f"`{base}: {{rater: {base}}}`")

    def _check_evaluation(self) -> None:
        """The benchmarks' settings; with training bases also the engine, the judge and (once every downloaded
        file is there) the data folder."""
        check_benchmarks(self.evaluation["benchmarks"], "config evaluation.benchmarks")
        for benchmark, settings in self.evaluation["settings"].items():
            try:
                check_settings(benchmark, settings)
            except InputError as exc:
                raise InputError(f"config evaluation.settings.{benchmark}: {exc}") from None
        if self.bases:
            engines.check(self.evaluation["engine"], "config evaluation.engine")
            check_evaluation(self.evaluation["data_dir"], self.evaluation["benchmarks"], self.evaluation["settings"],
                             data=all(os.path.isfile(f"{resources.DOWNLOAD_DIR}/{f.path}")
                                      for f in self.eval_downloads))

    # -------------------------------------------------------------------------------- data and rating
    def real_datasets(self) -> str:
        """The wildcard pattern of the datasets that may be selected, trained on and released (no canary set)."""
        return "|".join(re.escape(d) for d in self.datasets)

    def dataset_spec(self, name: str) -> dict[str, Any]:
        """What the jobs of a dataset read: its config entry, or an audit's canary set (its source inside)."""
        return self.datasets[name] if name in self.datasets else self.audits[name]

    def shards(self, dataset: str) -> list[str]:
        return shard_names(self.dataset_spec(dataset)["n_shards"])

    def source_path(self, dataset: str) -> str | None:
        """The local file a dataset is read from, else None (a Hub dataset, prepared by prepare_data)."""
        return audit.source_path(self.dataset_spec(dataset))

    def shard_hash(self, dataset: str, shard: str) -> str:
        return shard_hashes(self.dataset_spec(dataset))[shard]

    def model_gpus(self, model: str) -> int:
        """GPUs of a job that runs a rater for inference: its `gpus` (a model too large for one GPU is split)."""
        return rater_gpus(self.models.get(model))

    def rating_shards(self, dataset: str, models: list[str] | None = None) -> list[str]:
        """Every rating shard of a dataset: each prompt x shard of each rater (of `models`, default all)."""
        return [layout.RATING_SHARD.format(dataset=dataset, model=m, prompt=p, shard=s)
                for m, p, s in itertools.product(list(self.models) if models is None else models,
                                                 [p.id for p in self.prompts], self.shards(dataset))]

    def model_infos(self) -> dict[str, str]:
        return {m: layout.MODEL_INFO.format(model=m) for m in self.models}

    # ------------------------------------------------------------------------------ baselines
    def judge_gpus(self) -> int:
        """A local judge's GPUs (a rater's folder: that rater's gpus); 0 for an OpenAI-compatible endpoint."""
        if self.judge["type"] != "hf":
            return 0
        name = prepared_model_name(self.judge["model_dir"])
        return 1 if name is None else self.model_gpus(name)

    def judge_model(self) -> list[str]:
        """A local (hf) judge's prepared folder is an input of the judge jobs: re-preparing it reruns them."""
        return [f"{self.judge['model_dir']}/model.json"] if self.judge["type"] == "hf" else []

    # ---------------------------------------------------------------------------- scoring and selection
    def method(self, name: str) -> methods.Method:
        """A configured method with this config's effective alpha and K (selectit.methods.resolve)."""
        return methods.resolve(name, self.config)

    def select_settings(self, name: str) -> dict[str, Any]:
        """The settings a method's subset depends on besides its inputs (its select job's params)."""
        return methods.select_settings(name, self.select_values)

    def level_settings(self, name: str) -> dict[str, Any]:
        """The settings a score level depends on besides its inputs (its level_scores job's params)."""
        return methods.level_settings(name, self.level_values)

    def canary_dataset(self, dataset: str) -> str:
        """The name under which an audited dataset's canaries are rated."""
        return dataset + audit.SUFFIX

    def levels_read(self, names) -> list[str]:
        """The score levels a list of methods reads, with the configured ones that fuse_scores gathers."""
        return sorted(set(methods.LEVELS).union(*(methods.parse(m).levels() for m in names)))

    def sentence_points(self, levels) -> list[tuple[int, str]]:
        """(k, alpha file name) of every sentence file those levels read."""
        return sorted({(m.k, layout.alpha_name(m.alpha))
                       for m in map(self.method, levels)
                       if m.spec.source == "sentence"})

    def fused_targets(self) -> list[str]:
        """Every level of score for every sample of each dataset (results/scores/{dataset}/selectit.parquet)."""
        return [layout.FUSED.format(dataset=d) for d in self.datasets]

    def subset_targets(self) -> list[str]:
        return sorted({layout.subset(d, m, p) for d in self.datasets for m in self.selection["methods"]
                       for p in self.selection["proportions"]})

    def audit_targets(self) -> list[str]:
        return [layout.AUDIT.format(dataset=d) for d in self.audit_plans]

    # ---------------------------------------------------------------------------- training and evaluation
    def base_model(self, base: str) -> str:
        """Prepared model folder name of a training base: the rater it names, or its own name."""
        return self.bases[base].get("rater", base)

    def base_model_spec(self, base: str) -> dict[str, Any]:
        """A training base's model spec (what prepare_model builds), without its training settings."""
        return {k: v for k, v in self.bases[base].items() if k != "settings"}

    def base_settings(self, base: str) -> dict[str, Any]:
        """Training settings of one base: training.settings, then the base's own `settings` over them."""
        return base_settings(self.training, base)

    def plan_model_infos(self) -> list[str]:
        """model.json of every rater and base whose parameter count the plan must read (none in paper.cost)."""
        thetas = ((self.config.get("paper") or {}).get("cost") or {}).get("thetas") or {}
        names = set(self.models) | {self.base_model(b) for b in self.bases}
        return [layout.MODEL_INFO.format(model=m) for m in sorted(names - set(thetas))]

    def run_dirs(self, stage: str) -> list[str]:
        t = self.training
        return sorted({layout.run_dir(stage, *run) for run in itertools.product(
            self.bases, self.datasets, t["methods"], t["proportions"], t["seeds"])})

    def train_targets(self) -> list[str]:
        return [f"{d}/train_result.json" for d in self.run_dirs("train")]

    def eval_targets(self) -> list[str]:
        return [f"{d}/{b}.json" for d in self.run_dirs("eval") for b in self.evaluation["benchmarks"]]

    def eval_settings(self, benchmark: str) -> dict[str, Any]:
        """The benchmark's settings, with the engine where it is not the default (so results made before the
        engine was a choice keep their params)."""
        settings = self.evaluation["settings"].get(benchmark) or {}
        if self.evaluation["engine"] != engines.DEFAULT:
            settings = {**settings, "engine": self.evaluation["engine"]}
        return settings

    def eval_download_targets(self, benchmark: str | None = None) -> list[str]:
        """The download folder's files of one configured benchmark (all of them without one)."""
        return [f"{resources.DOWNLOAD_DIR}/{f.path}" for f in self.eval_downloads
                if benchmark in (None, f.benchmark)]

    def eval_data(self, benchmark: str) -> list[str]:
        """The benchmark's data files, so an edited file reruns its evaluations; in the download folder, the
        files the download rule fetches."""
        if self.eval_downloads:
            return self.eval_download_targets(benchmark)
        return data_files(benchmark, self.evaluation["data_dir"])

    def eval_judge(self, benchmark: str) -> list[str] | str:
        """A local judge model (AlpacaEval's hf judge) prepared by the workflow is an input of its jobs."""
        judge = self.eval_settings(benchmark).get("judge") or {}
        model_dir = str(judge.get("model_dir") or "").rstrip("/")
        if judge.get("type", "hf") == "hf" and prepared_model_name(model_dir) is not None:
            return f"{model_dir}/model.json"
        return []
