"""A tiny Qwen2.5-style tokenizer built offline: transformers' `Qwen2Tokenizer` (byte-level BPE with Qwen's
pre-tokenizer) over a vocabulary trained in milliseconds on a few sentences. Any text round-trips through it."""

import json
from functools import lru_cache

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import AddedToken, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

PAD_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")

_CORPUS = (
    "You are an helpful assistant.",
    "What is the red car in this image? Please output segmentation mask.",
    "Can you segment the dog in this image? Please segment the cat in this image.",
    "What is a person on the left in this image? Please respond with segmentation mask.",
    "It is [SEG]. Sure, [SEG]. Sure, it is [SEG]. Sure, the segmentation result is [SEG].",
    "Which object would you use to cut bread? Please output segmentation mask.",
)


@lru_cache(maxsize=1)
def _trained_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=360,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[PAD_TOKEN, *CHAT_TOKENS],
        show_progress=False,
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(pair) for pair in model["merges"]]


def tiny_qwen2_tokenizer(extra_added_tokens: tuple[str, ...] = ()) -> Qwen2Tokenizer:
    """A fresh tokenizer (callers may add tokens to it): pad `<|endoftext|>`, eos `<|im_end|>`, right padding.

    `extra_added_tokens` are added as special tokens right after the chat tokens (e.g. InternVL's `<img>` ... to
    mimic a tokenizer that already has them)."""
    vocab, merges = _trained_bpe()
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab), merges=list(merges), unk_token=PAD_TOKEN, eos_token="<|im_end|>", pad_token=PAD_TOKEN
    )
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in CHAT_TOKENS])
    if extra_added_tokens:
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in extra_added_tokens])
    return tokenizer
