"""Selection methods, declared once: the rules, the selection code, the tables and the figures all read
this registry.

A configured method name is a kind, optionally with sweep overrides for the kinds that use them:
``selectit-alpha0.4``, ``selectit-k3``, ``sentence_r-alpha0.4-k3``. The name is parsed here and nowhere
else (`parse`); `resolve` fills in the config's values, so a `Method` knows everything its subset depends
on:

- ``reads``: which score table it selects by (``level`` of its own name, the ``selectit`` level,
  the merged ``ifd`` / ``judge`` table, or nothing but the samples);
- ``settings``: the config values it depends on besides what it reads (``seed``, the judge's
  ``threshold``); they are the select job's params, so editing any other value re-selects nothing;
- ``level_settings``: the config values its level job depends on besides its input files (Token-R's and
  Model-R's prompt line, ``scoring.token_prompt``); they are the level_scores job's params;
- for score levels (token_r, sentence_r, model_r, selectit): ``source`` (token scores of one prompt,
  ``scoring.token_prompt``, or sentence scores of the first K prompts at α), ``fused`` (Eq. 5 over the
  raters with the model weights, else the rater with the largest weight), and the effective ``alpha`` / ``k``;
- how it selects: ``select``, a selection function of selectit.rankings (every sample, a seeded draw, the top
  of a ranking, a draw from what the top leaves out), and ``ranking``, what it ranks records by (a column of
  its score table or the response length, the key, the tie rule). selectit.selection.select_ids calls the
  declared function and the audit (selectit.audit) scores records by the declared ranking.

A `Method` also names the score table it selects by (`Method.score_table`) and the score levels it reads
(`Method.levels`). Adding a method: one `Kind` entry here, and one function in selectit.rankings if it
selects in a new way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from selectit import layout, rankings, schema
from selectit.errors import InputError
from selectit.rankings import Ranking


@dataclass(frozen=True)
class Kind:
    label: str
    reads: str | None = None  # None: the samples only; "level": its own level table; "selectit", "ifd", "judge"
    settings: tuple[str, ...] = ()  # config values its subset depends on: "seed", "threshold"
    level_settings: tuple[str, ...] = ()  # config values its level scores depend on: "token_prompt"
    source: str | None = None  # score levels: "token" (one prompt) or "sentence" (first K prompts at alpha)
    fused: bool = False  # score levels: Eq. 5 over the raters; else the rater with the largest weight
    scores: bool = False  # ranks records by a score of each record: the audit measures it (selectit.audit)
    select: Callable = rankings.top  # (ranking, samples, scores, proportion, seed) -> positions (selectit.rankings)
    ranking: Ranking | None = None  # what `select` ranks by: a column of its score table or the response length
    doc: str = ""

    @property
    def sweeps(self) -> bool:
        """Accepts -alpha<a> / -k<K> overrides: only what uses sentence scores depends on them."""
        return self.source == "sentence"


SCORE = Ranking("score")  # a level's score, highest first; ties to the later sample (scoring.select_top)

KINDS: dict[str, Kind] = {
    "full": Kind("Full data", select=rankings.everything,
                 doc="every sample (always named and trained at proportion 1.0)"),
    "random": Kind("Random", settings=("seed",), scores=True, select=rankings.random_draw,
                   doc="int(N * proportion) samples drawn with the seed"),
    "length": Kind("Top by length", scores=True, ranking=Ranking("length"),
                   doc="the longest responses (character length)"),
    "token_r": Kind("Token-R", reads="level", scores=True, source="token", level_settings=("token_prompt",),
                    ranking=SCORE,
                    doc="token-level score (Eq. 2-3) of one prompt (scoring.token_prompt, default the first), by "
                        "the rater with the largest weight"),
    "sentence_r": Kind("Sentence-R", reads="level", scores=True, source="sentence", ranking=SCORE,
                       doc="sentence-level score (Eq. 4) of the rater with the largest weight"),
    "model_r": Kind("Model-R", reads="level", scores=True, source="token", fused=True, level_settings=("token_prompt",),
                    ranking=SCORE,
                    doc="the raters' token-level scores of that one prompt fused with the model weights"),
    "selectit": Kind("SelectIT", reads="level", scores=True, source="sentence", fused=True, ranking=SCORE,
                     doc="model-level score (Eq. 5) of the raters' sentence-level scores"),
    "random_unselected": Kind("Random from unselected", reads="selectit", settings=("seed",),
                              select=rankings.random_unselected, ranking=SCORE,
                              doc="a random draw of the same size from the samples SelectIT did not select"),
    "ifd": Kind("Q2Q (IFD)", reads="ifd", scores=True, ranking=Ranking("ifd", rankings.ifd_key, ties="earlier"),
                doc="highest IFD < 1 (Cherry LLM), IFD >= 1 last (closest to 1 first), undefined IFD after them; "
                    "ties to the earlier sample"),
    "judge": Kind("AlpaGasus (judge)", reads="judge", scores=True, settings=("threshold",),
                  ranking=Ranking("score", ties="earlier"),
                  doc="highest judge score, size-matched (ties to the earlier sample, unparsed answers last); the "
                      "manifest counts those reaching the threshold"),
}
LEVELS = tuple(k for k, v in KINDS.items() if v.source)  # token_r, sentence_r, model_r, selectit
# the baselines with a merged score table of their own, results/scores/{dataset}/{kind}.parquet: the kinds that
# read the table named after them (ifd, judge)
BASELINES = tuple(k for k, v in KINDS.items() if v.reads == k)
_SUFFIX = r"(?:-alpha(?P<alpha>[0-9.]+))?(?:-k(?P<k>[0-9]+))?"  # the sweep overrides, written once


def name_pattern(kinds: tuple[str, ...] | None = None) -> str:
    """The wildcard constraint of method names (of the given kinds; None: any name of method form)."""
    kind = "(?:" + "|".join(kinds) + ")" if kinds else "[a-z_]+"
    return kind + re.sub(r"\(\?P<\w+>", "(?:", _SUFFIX)


NAME_PATTERN = name_pattern()
_NAME_RE = re.compile(r"^(?P<kind>[a-z_]+)" + _SUFFIX + "$")


@dataclass(frozen=True)
class Method:
    name: str  # as configured
    kind: str
    alpha: float | None = None  # sweep override (parse) or effective value (resolve); None if unused
    k: int | None = None

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    # compatibility with the earlier parse_method result
    @property
    def base(self) -> str:
        return self.kind

    @property
    def label(self) -> str:
        return label(self.name)

    def levels(self) -> set[str]:
        """The score levels it reads: its own (a level method), the one it reads (random_unselected: selectit),
        else none."""
        reads = self.spec.reads
        if reads == "level":
            return {self.name}
        return {reads} if reads in LEVELS else set()

    def score_table(self, dataset: str) -> str | None:
        """The score table it selects by (selectit.layout): a level's file, or a baseline's merged table; None
        for the methods that read the samples only."""
        reads = self.spec.reads
        if reads == "level":
            return layout.LEVEL.format(dataset=dataset, method=self.name)
        if reads in LEVELS:
            return layout.LEVEL.format(dataset=dataset, method=reads)
        if reads in BASELINES:
            return layout.BASELINE.format(dataset=dataset, baseline=reads)
        return None


def parse(name: str) -> Method:
    """The kind and the overrides written in a method name (None where not written)."""
    m = _NAME_RE.match(name)
    if not m or m["kind"] not in KINDS:
        raise InputError(f"unknown selection method {name!r}; use one of {list(KINDS)}, optionally with "
                         "-alpha<a> / -k<K> for the sentence-level methods (e.g. selectit-alpha0.4)")
    if (m["alpha"] or m["k"]) and not KINDS[m["kind"]].sweeps:
        sweeping = [k for k, v in KINDS.items() if v.sweeps]
        raise InputError(f"method {name!r}: -alpha/-k apply only to {sweeping}, which use sentence-level scores")
    return Method(name, m["kind"], float(m["alpha"]) if m["alpha"] else None, int(m["k"]) if m["k"] else None)


def _config_k(config: dict) -> int:
    return int(config.get("n_prompts") or schema.default("n_prompts"))


def _config_alpha(config: dict) -> float:
    return float((config.get("scoring") or {}).get("alpha", schema.default("scoring", "alpha")))


def _config_scoring(config: dict, key: str):
    return (config.get("scoring") or {}).get(key, schema.default("scoring", key))


def _config_levels(config: dict) -> int:
    return int(config.get("score_levels") or schema.default("score_levels"))


def resolve(name: str, config: dict) -> Method:
    """The method with its effective alpha and K (the override, else the config's) where it uses them.

    Under ``scoring.variant: released`` K is also the number of score classes the released code sums over
    (selectit.scoring.released_token_level): K = 1 (a division by zero there) and K above score_levels (an
    IndexError there) stop here, when the DAG is built."""
    m = parse(name)
    if not m.spec.sweeps:
        return m
    k = _config_k(config) if m.k is None else m.k
    n_rated = _config_k(config)
    if k > n_rated:
        raise InputError(f"method {name!r} asks for K={k} prompts but n_prompts is {n_rated}")
    if _config_scoring(config, "variant") == "released":
        levels = _config_levels(config)
        if k < 2:
            raise InputError(
                f"method {name!r} at K = {k} under scoring.variant 'released': the released sentence_level.py / "
                "model_level.py use K as the number of score classes too and divide by K - 1, which is 0 at "
                "K = 1 (NaN scores there); use K >= 2, or scoring.variant 'paper'")
        if k > levels:
            raise InputError(
                f"method {name!r} at K = {k} under scoring.variant 'released': the released code sums over the "
                f"first K score classes, but score_levels is {levels} (an IndexError there); use K <= {levels}, "
                "or scoring.variant 'paper'")
    return Method(name, m.kind, _config_alpha(config) if m.alpha is None else m.alpha, k)


def token_prompt(config: dict) -> int:
    """Token-R's and Model-R's prompt: a 1-based line among the rated prompts 1..n_prompts.

    ``scoring.token_prompt``: a line number (default 1), or ``random``: one line drawn with
    ``random.Random(scoring.token_prompt_seed).choice`` over the rated lines, the released token_level.py's
    ``random.choice(readlines())`` made reproducible (the same line when the prompt file has n_prompts lines)."""
    import random

    choice = _config_scoring(config, "token_prompt")
    n_rated = _config_k(config)
    if choice == "random":
        seed = _config_scoring(config, "token_prompt_seed")
        return random.Random(seed).choice(range(1, n_rated + 1))
    if isinstance(choice, bool) or not isinstance(choice, int) or not 1 <= choice <= n_rated:
        raise InputError(f"config scoring.token_prompt: {choice!r} is not a rated prompt line; use a line number "
                         f"1..{n_rated} (n_prompts) or 'random'")
    return choice


def level_settings(name: str, values: dict) -> dict:
    """Of the level settings `values` (token_prompt), those this method's level scores depend on: the
    level_scores job's params, so editing another value recomputes no level."""
    return {key: values[key] for key in parse(name).spec.level_settings}


def label(name: str) -> str:
    """The one readable name of a method, for tables and figures: ``SelectIT (α = 0.4, K = 3)``."""
    m = parse(name)
    extra = ([f"α = {m.alpha:g}"] if m.alpha is not None else []) + ([f"K = {m.k}"] if m.k is not None else [])
    base = KINDS[m.kind].label
    return f"{base} ({', '.join(extra)})" if extra else base


def canonical(name: str, proportion: float, config: dict) -> tuple[str, float]:
    """The one name under which a (method, proportion) pair is selected, trained and evaluated: overrides
    equal to the config's values are dropped; full, and SelectIT at 1.0, are ``full`` at 1.0."""
    m = parse(name)
    parts = [m.kind]
    if m.alpha is not None and m.alpha != _config_alpha(config):
        parts.append(f"alpha{name.split('-alpha')[1].split('-')[0]}")
    if m.k is not None and m.k != _config_k(config):
        parts.append(f"k{m.k}")
    name = "-".join(parts)
    if m.kind == "full" or (name == "selectit" and float(proportion) == 1.0):
        return "full", 1.0
    return name, float(proportion)


def sweep_name(kind: str, alpha: float | None = None, k: int | None = None) -> str:
    """The method name of a sweep point (Tables 2 and 3)."""
    return kind + (f"-alpha{alpha:g}" if alpha is not None else "") + (f"-k{k}" if k is not None else "")


def select_settings(name: str, values: dict) -> dict:
    """Of the selection settings `values` (seed, threshold), those a subset of this method depends on
    besides its score inputs: the select job's params, so editing another value re-selects nothing."""
    return {key: values[key] for key in parse(name).spec.settings}
