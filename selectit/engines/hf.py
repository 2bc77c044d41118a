"""The Hugging Face ``transformers`` engine: the model in this process (``selectit.models.load_prepared``), scored by
the rater's batched last-position forward (``selectit.rating.Rater``: token budget, low-padding batches, the
prompt head's keys and values computed once, OOM halving), IFD losses by ``selectit.ifd.mean_response_losses``, and
generation by ``selectit.evaluation._textgen.generate`` (static, length-sorted, left-padded batches)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selectit.engines.base import Engine


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, model_name: str = "model"):
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name

    @classmethod
    def load(cls, model_dir: str | Path, *, dtype: str | None = None, gpus: int = 1, device: str | None = None,
             model_name: str | None = None, tensor_parallel: bool = False, **_: Any) -> HFEngine:
        from selectit.models import load_prepared, parse_dtype

        model, tokenizer = load_prepared(model_dir, dtype=parse_dtype(dtype), device=device, gpus=gpus,
                                         tensor_parallel=tensor_parallel)
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token  # batched generation and IFD pad with it (never attended)
        return cls(model, tokenizer, model_name or Path(model_dir).name)

    def describe(self) -> dict[str, Any]:
        return {"engine": "hf", "dtype": str(self.model.dtype)}

    def score(self, rows, row_ids, token_ids, *, prefix_ids=None, token_budget=8192, max_rows=256, progress=True,
              compile=None):
        from selectit.rating import Rater

        rater = Rater(self.model, self.tokenizer, len(token_ids), self.model_name, token_budget=token_budget,
                      max_rows=max_rows, progress=progress, prefix_ids=prefix_ids, compile=compile,
                      score_ids=token_ids)
        values, mass = rater.rate(list(rows), list(row_ids))
        stats = rater.stats.as_dict()
        stats.update(engine="hf", compiled=rater.compiled)
        return values, mass, stats

    def losses(self, seqs, n_scored, *, token_budget=8192, stats=None):
        from selectit.ifd import mean_response_losses

        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        return mean_response_losses(self.model, seqs, n_scored, token_budget, pad, stats)

    def generate(self, prompts, **settings):
        from selectit.evaluation._textgen import generate

        return generate(self.model, self.tokenizer, prompts, **settings)
