"""A tiny model and a processor that agree on tokens and tile size (112-px tiles, 16 image tokens per tile)."""

import numpy as np
import PIL.Image
import torch
from helpers.tokenizer import tiny_qwen2_tokenizer

from transformers_self1e import Self1EForSegmentation, Self1EImageProcessor, Self1EProcessor
from transformers_self1e.presets import tiny_config


def tiny_processor(**image_kwargs) -> Self1EProcessor:
    return Self1EProcessor(Self1EImageProcessor(size=112, **image_kwargs), tiny_qwen2_tokenizer(), image_seq_length=16)


def tiny_model_and_processor(seed: int = 0, image_kwargs: dict | None = None, **config_overrides):
    processor = tiny_processor(**(image_kwargs or {}))
    config = tiny_config(
        text_config={"vocab_size": len(processor.tokenizer)},
        image_token_id=processor.image_token_id,
        seg_token_id=processor.seg_token_id,
        **config_overrides,
    )
    torch.manual_seed(seed)
    model = Self1EForSegmentation(config).eval()
    with torch.no_grad():
        # Random init leaves these at zero; give tiles and positions something to tell them apart.
        model.model.vision_tower.embeddings.position_embeddings.normal_(std=0.5)
    return model, processor


def random_image(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))
