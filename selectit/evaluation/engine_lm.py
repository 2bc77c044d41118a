"""lm-evaluation-harness on any of our engines (``selectit.engines``): an ``lm_eval`` model whose requests run
through an ``Engine`` instead of lm_eval's own ``HFLM``. The HF engine keeps ``HFLM`` (the reference path); this
adapter serves the others (vLLM).

It follows ``HFLM``'s conventions where they shape the numbers: contexts encoded by ``tok_encode`` with the
tokenizer's own special tokens unless the text starts with the BOS already; a generation context left-truncated to
``max_length - max_gen_toks``; stop sequences with the EOS text added (``handle_stop_sequences``), the continuation
decoded on its own without special tokens and cut at the first stop; log-likelihoods over ``(context +
continuation)[-max_length:]``, greedy when every continuation token was the most likely one.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs


class EngineLM(TemplateLM):
    def __init__(self, engine: Any, max_length: int | None = None, max_gen_toks: int = 256):
        super().__init__()
        self.engine, self.tokenizer = engine, engine.tokenizer
        self._max_length = int(max_length or engine.max_model_len)
        self.max_gen_toks = max_gen_toks

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special["add_special_tokens"] = False
        ids = self.tokenizer.encode(string, **special)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any):
        seqs, starts = [], []
        for _, context_enc, continuation_enc in requests:
            seq = (list(context_enc) + list(continuation_enc))[-self.max_length:]
            seqs.append(seq)
            starts.append(len(seq) - len(continuation_enc))
        logprobs, greedy = self.engine.token_logprobs(seqs, starts)
        out = []
        for lp, top in zip(logprobs, greedy):
            out.append((float(sum(lp)), bool(all(top))))
            self.cache_hook.add_partial("loglikelihood", None, out[-1])
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError("no benchmark of this pipeline asks for rolling log-likelihoods")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        eos = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        prompts, settings = [], []
        for request in requests:
            context, gen_kwargs = request.args
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks"))
            prompts.append(self.tok_encode(context, left_truncate_len=self.max_length - max_gen))
            sampled = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0) or 0) > 0
            settings.append({"max_new_tokens": max_gen, "stop": until, "do_sample": sampled,
                             "temperature": float(kwargs.get("temperature", 1.0) or 1.0),
                             "top_p": float(kwargs.get("top_p", 1.0) or 1.0)})
        new_ids = self.engine.generate_ids(prompts, settings)
        out = []
        for ids, s in zip(new_ids, settings):
            text = self.tokenizer.decode(ids[0], skip_special_tokens=True)
            for stop in s["stop"]:
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
        return out
