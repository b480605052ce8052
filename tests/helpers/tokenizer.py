"""A tiny Qwen2.5-style tokenizer built offline from a few sentences (any text still round-trips through it)."""

from transformers import AddedToken, Qwen2Tokenizer

from transformers_self1e.training.small_tokenizer import CHAT_TOKENS, PAD_TOKEN, train_small_tokenizer

__all__ = ["CHAT_TOKENS", "PAD_TOKEN", "tiny_qwen2_tokenizer"]

_CORPUS = (
    "You are an helpful assistant.",
    "What is the red car in this image? Please output segmentation mask.",
    "Can you segment the dog in this image? Please segment the cat in this image.",
    "What is a person on the left in this image? Please respond with segmentation mask.",
    "It is [SEG]. Sure, [SEG]. Sure, it is [SEG]. Sure, the segmentation result is [SEG].",
    "Which object would you use to cut bread? Please output segmentation mask.",
)


def tiny_qwen2_tokenizer(extra_added_tokens: tuple[str, ...] = ()) -> Qwen2Tokenizer:
    """A fresh tokenizer (callers may add tokens to it): pad `<|endoftext|>`, eos `<|im_end|>`, right padding.

    `extra_added_tokens` are added as special tokens right after the chat tokens (e.g. InternVL's `<img>` ... to
    mimic a tokenizer that already has them)."""
    tokenizer = train_small_tokenizer(list(_CORPUS) * 4, vocab_size=360)
    if extra_added_tokens:
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in extra_added_tokens])
    return tokenizer
