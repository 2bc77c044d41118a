"""What a model job asks of a model, whatever runs it (``Engine``), and the engine-independent pieces around it.

Three operations cover every model job of the pipeline:

- ``score``: log-probabilities (or logits: only their softmax over the K ids is used, plus the full-vocabulary
  mass on them) of given token ids at the position after each row (rating, the local judge);
- ``losses``: the mean cross-entropy of each sequence's last ``n`` tokens (IFD), and ``token_logprobs``, the
  log-probability of every token of a continuation and whether it was the most likely one (log-likelihood
  benchmarks);
- ``generate``: continuations of prompts under a benchmark's sampling settings (the generation benchmarks).

An engine receives token ids, or prompts it tokenises with the main environment's tokenizer (``tokenizer``), and
returns numbers or texts decoded by that same tokenizer: the tokenisation, truncation and decoding are the
project's, identical across engines. An engine owns what its correctness needs (left padding for batched HF
generation, say), not its caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from selectit.errors import NonFiniteLogitsError


class Engine(ABC):
    """One loaded model. Use as a context manager, or call ``close``."""

    name: str = ""
    tokenizer: Any = None
    model_name: str = "model"

    @abstractmethod
    def score(self, rows: Sequence[Any], row_ids: Sequence[str], token_ids: Sequence[int], *,
              prefix_ids: Sequence[int] | None = None, token_budget: int = 8192, max_rows: int = 256,
              progress: bool = True, compile: bool | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """For each row (``selectit.prompts.EncodedRow``, in any order: results come back by ``row.position``):
        (N, K) float32 values whose softmax over the K ids is the renormalised score distribution, (N,) float32
        full-vocabulary probability mass on the K ids, and the run's stats. ``prefix_ids``: the ids most rows
        start with (the rating-prompt head), which an engine may compute once. ``compile``: whether to compile the
        model (None: the engine decides; the HF engine's ``Rater`` rule, or vLLM's by the work)."""

    @abstractmethod
    def losses(self, seqs: Sequence[list[int]], n_scored: Sequence[int], *, token_budget: int = 8192,
               stats: Any = None) -> np.ndarray:
        """Mean cross-entropy (float64) of the last ``n_scored[i]`` tokens of each sequence (NaN where 0)."""

    @abstractmethod
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, n_samples: int = 1, stop: Sequence[str] = (),
                 seed: int = 0) -> list[list[str]]:
        """``n_samples`` continuations of each prompt, decoded without special tokens and cut at the first stop
        string (``selectit.evaluation.textgen.generate`` defines the contract)."""

    def describe(self) -> dict[str, Any]:
        """What a result records of the engine (its name, dtype, version)."""
        return {"engine": self.name}

    def close(self) -> None:
        """Free the model (and any process that holds it)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def check_scores(values: np.ndarray, mass: np.ndarray, rows: Sequence[Any], row_ids: Sequence[str],
                 model_name: str) -> None:
    """Every engine's guard: a non-finite score value stops the job, naming the sample."""
    bad = ~(np.isfinite(values).all(axis=1) & np.isfinite(mass)) if len(values) else np.zeros(0, bool)
    for row in rows:
        if bad[row.position]:
            raise NonFiniteLogitsError(
                f"model {model_name!r}: NaN/inf score values for sample {row_ids[row.position]!r} "
                f"(row {row.position}, {len(row.input_ids)} tokens): {values[row.position].tolist()}; "
                "try dtype fp32 or check the model weights")
