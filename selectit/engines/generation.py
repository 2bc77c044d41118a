"""Generation as every engine does it: the prompts' token ids (the tokenizer's special tokens only where the
prompts do not carry them already), the settings check, the completion's text (decoded with its prompt) and the
cut at the first stop string. The Hugging Face loop is ``selectit.engines.hf.generate_hf``, vLLM's
``selectit.engines.vllm.VLLMEngine.generate``; benchmarks call ``selectit.evaluation.textgen.generate``."""

from __future__ import annotations

from collections.abc import Sequence

from selectit.errors import InputError


def truncate_at_stops(text: str, stops: Sequence[str]) -> str:
    cut = len(text)
    for stop in stops:
        if stop:
            i = text.find(stop)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def adds_special_tokens(tokenizer, prompts: Sequence[str]) -> bool:
    """Whether to let the tokenizer add its special tokens: not where every prompt carries the BOS text already
    (chat templates do), which would duplicate it."""
    bos = tokenizer.bos_token
    return not (bos and all(p.startswith(bos) for p in prompts))


def prompt_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt's token ids, as every engine feeds them to its model."""
    add_special = adds_special_tokens(tokenizer, prompts)
    return [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=add_special)["input_ids"]]


def check_generation(max_new_tokens: int, batch_size: int, n_samples: int, do_sample: bool,
                     temperature: float) -> None:
    if batch_size < 1 or max_new_tokens < 1 or n_samples < 1:
        raise InputError("batch_size, max_new_tokens and n_samples must be >= 1")
    if do_sample and temperature <= 0:
        raise InputError(f"sampling needs temperature > 0, got {temperature}")


def completion_text(tokenizer, prompt_ids, new_ids) -> str:
    """The text of the generated ids ``new_ids`` that follow ``prompt_ids`` (both without special tokens).

    Decoding the generated ids on their own is wrong for SentencePiece-style tokenizers (LLaMA-2, Mistral:
    a Metaspace "▁" prefix): the decoder drops the leading space of a sequence's first token, so a HumanEval
    completion "    return x" would come back as "   return x". As open-instruct does, prompt + completion
    are decoded together and the decoded prompt is cut off; if the decoded prompt is not a prefix of the
    whole (a tokenizer whose decoding is not concatenative), the generated ids are decoded alone."""
    prompt_ids = [int(t) for t in prompt_ids]
    new_ids = [int(t) for t in new_ids]
    prompt_text = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    if whole.startswith(prompt_text):
        return whole[len(prompt_text):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)
