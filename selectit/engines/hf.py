"""The Hugging Face ``transformers`` engine: the model in this process (``selectit.models.load_prepared``), scored by
the rater's batched last-position forward (``selectit.engines.hf_rater.Rater``: token budget, low-padding batches,
the prompt head's keys and values computed once, OOM halving), IFD losses by
``selectit.engines.hf_rater.mean_response_losses``, and generation by ``generate_hf``
(static, length-sorted, left-padded batches)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selectit.engines.base import Engine
from selectit.engines.generation import adds_special_tokens, check_generation, completion_text, truncate_at_stops
from selectit.engines.hf_rater import Rater, mean_response_losses
from selectit.errors import InputError
from selectit.models import load_prepared, parse_dtype


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model: Any, tokenizer: Any, model_name: str = "model"):
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name

    @classmethod
    def load(cls, model_dir: str | Path, *, dtype: str | None = None, gpus: int = 1, device: str | None = None,
             model_name: str | None = None, tensor_parallel: bool = False, **_: Any) -> HFEngine:
        model, tokenizer = load_prepared(model_dir, dtype=parse_dtype(dtype), device=device, gpus=gpus,
                                         tensor_parallel=tensor_parallel)
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
            tokenizer.pad_token = tokenizer.eos_token  # batched generation and IFD pad with it (never attended)
        return cls(model, tokenizer, model_name or Path(model_dir).name)

    def describe(self) -> dict[str, Any]:
        return {"engine": "hf", "dtype": str(self.model.dtype)}

    def score(self, rows, row_ids, token_ids, *, prefix_ids=None, token_budget=8192, max_rows=256, progress=True,
              compile=None):
        rater = Rater(self.model, self.tokenizer, len(token_ids), self.model_name, token_budget=token_budget,
                      max_rows=max_rows, progress=progress, prefix_ids=prefix_ids, compile=compile,
                      score_ids=token_ids)
        values, mass = rater.rate(list(rows), list(row_ids))
        stats = rater.stats.as_dict()
        stats.update(engine="hf", compiled=rater.compiled)
        return values, mass, stats

    def losses(self, seqs, n_scored, *, token_budget=8192, stats=None):
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        return mean_response_losses(self.model, seqs, n_scored, token_budget, pad, stats)

    def generate(self, prompts, **settings):
        return generate_hf(self.model, self.tokenizer, prompts, **settings)


# -------------------------------------------------------------------------------- generation
def encode_left_padded(tokenizer, prompts: Sequence[str]):
    """Tokenise (``prompt_ids``' ids), padded on the left whatever the tokenizer's own ``padding_side``: a decoder
    continues each row from its last position, so right padding would put pad tokens between a short prompt and
    its continuation (silently wrong completions)."""
    if tokenizer.pad_token_id is None:
        raise InputError("batched generation needs a tokenizer with a pad token (load_model sets the EOS as one)")
    return tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left",
                     add_special_tokens=adds_special_tokens(tokenizer, prompts))


def _stop_criteria(tokenizer, stops: Sequence[str], prompt_len: int):
    """Per-row stop: a row is done once its generated text (last 24 tokens) holds a stop string."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stops = [s for s in stops if s]
    if not stops:
        return None

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            gen = input_ids[:, prompt_len:]
            done = []
            for row in gen:
                tail = tokenizer.decode(row[-24:], skip_special_tokens=True)
                done.append(any(s in tail for s in stops))
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_Stop()])


def generate_hf(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, n_samples: int = 1,
             stop: Sequence[str] = (), seed: int = 0) -> list[list[str]]:
    """Generate ``n_samples`` continuations per prompt, batched with left padding (set here, not trusted to the
    caller's tokenizer).

    Rows (prompt, sample) are sorted by prompt length and cut into batches of ``batch_size`` rows;
    each batch is seeded with ``seed + batch index`` so a rerun with the same settings reproduces the
    samples. Continuations are decoded without special tokens (``completion_text``: together with their
    prompt, which is then cut off) and cut at the first stop string.
    """
    import torch
    from transformers import GenerationConfig

    check_generation(max_new_tokens, batch_size, n_samples, do_sample, temperature)
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
    rows = [(i, j) for i in range(len(prompts)) for j in range(n_samples)]
    rows.sort(key=lambda r: (-lengths[r[0]], r[0], r[1]))
    limit = getattr(model.config, "max_position_embeddings", None)
    if do_sample:
        gen_cfg = GenerationConfig(do_sample=True, temperature=float(temperature), top_p=float(top_p),
                                   top_k=0, max_new_tokens=int(max_new_tokens))
    else:
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=int(max_new_tokens))
    gen_cfg.pad_token_id = tokenizer.pad_token_id
    gen_cfg.eos_token_id = tokenizer.eos_token_id
    gen_cfg.bos_token_id = tokenizer.bos_token_id
    out: list[list[str | None]] = [[None] * n_samples for _ in prompts]
    device = next(model.parameters()).device
    for b, start in enumerate(range(0, len(rows), batch_size)):
        batch = rows[start:start + batch_size]
        enc = encode_left_padded(tokenizer, [prompts[i] for i, _ in batch]).to(device)
        prompt_len = enc.input_ids.shape[1]
        cfg = gen_cfg
        if limit is not None and prompt_len + max_new_tokens > limit:
            room = limit - prompt_len
            if room < 1:
                raise InputError(f"a prompt has {prompt_len} tokens, more than the model's {limit} positions")
            cfg = copy.deepcopy(gen_cfg)
            cfg.max_new_tokens = room
        torch.manual_seed(int(seed) + b)
        with torch.inference_mode():
            seqs = model.generate(**enc, generation_config=cfg,
                                  stopping_criteria=_stop_criteria(tokenizer, stop, prompt_len))
        for k, (i, j) in enumerate(batch):
            prompt_ids = enc.input_ids[k][enc.attention_mask[k].bool()]  # without the left padding
            text = completion_text(tokenizer, prompt_ids, seqs[k, prompt_len:])
            out[i][j] = truncate_at_stops(text, stop)
    return out  # type: ignore[return-value]
