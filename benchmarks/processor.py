"""A processor for the benchmark models: InternVL tiling at the model's tile size and a small trained tokenizer."""

from transformers_self1e import Self1EImageProcessor, Self1EProcessor
from transformers_self1e.modeling.prompts_self1e import ANSWER_TEMPLATES, SHORT_QUESTION_TEMPLATES
from transformers_self1e.training.small_tokenizer import train_small_tokenizer

CLASS_NAMES = [f"class {index}" for index in range(150)]


def benchmark_processor(tile_size: int, tokens_per_tile: int, max_tiles: int = 1) -> Self1EProcessor:
    corpus = [*SHORT_QUESTION_TEMPLATES, *ANSWER_TEMPLATES, "You are an helpful assistant.", *CLASS_NAMES]
    tokenizer = train_small_tokenizer(corpus * 2, vocab_size=400)
    image_processor = Self1EImageProcessor(size=tile_size, max_tiles=max_tiles)
    return Self1EProcessor(image_processor, tokenizer, image_seq_length=tokens_per_tile)


def token_overrides(processor: Self1EProcessor, config_name: str) -> dict:
    """Config overrides that make a benchmark model agree with `processor` on its special tokens. The mid model keeps
    InternVL3's vocabulary size (its embedding and LM head costs are real); the tiny one shrinks to the tokenizer."""
    overrides = {"image_token_id": processor.image_token_id, "seg_token_id": processor.seg_token_id}
    if config_name == "tiny":
        overrides["text_config"] = {"vocab_size": len(processor.tokenizer)}
    return overrides
