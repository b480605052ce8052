"""A small Qwen2.5-style tokenizer trained from scratch, for models trained from scratch on a narrow domain (the
synthetic shapes data, tests). Byte-level BPE with Qwen's pre-tokenizer: any text still round-trips."""

import json
from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import AddedToken, Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from ..modeling.prompts_self1e import CHAT_CONTROL_TOKENS as CHAT_TOKENS

PAD_TOKEN = "<|endoftext|>"


def train_small_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> Qwen2Tokenizer:
    """A `Qwen2Tokenizer` whose BPE merges are learnt from `texts`: pad `<|endoftext|>`, eos `<|im_end|>`, the chat
    tokens added as special tokens, right padding. `Self1EProcessor` adds the image and `[SEG]` tokens."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[PAD_TOKEN, *CHAT_TOKENS],
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer)
    trained = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(merge) for merge in trained["merges"]],
        unk_token=PAD_TOKEN,
        eos_token=CHAT_TOKENS[1],
        pad_token=PAD_TOKEN,
    )
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in CHAT_TOKENS])
    return tokenizer


__all__ = ["CHAT_TOKENS", "PAD_TOKEN", "train_small_tokenizer"]
