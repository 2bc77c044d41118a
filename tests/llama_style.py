"""A LLaMA-2-style tokenizer built offline: BPE with a Metaspace ("▁") pre-tokenizer and decoder, a BOS
added in front, wrapped as transformers' LlamaTokenizerFast. Byte-level BPE tokenizers (SmolLM2, GPT-2)
decode any slice of ids to the same text; SentencePiece-style ones drop the leading space of a decoded
sequence's first token, and that is what these tests need to show."""

from __future__ import annotations

from collections.abc import Iterable


def llama_style_tokenizer(corpus: Iterable[str], vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  show_progress=False)
    backend.train_from_iterator(list(corpus), trainer)
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", backend.token_to_id("<s>"))])
    return LlamaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
