"""Token layouts and tiny models for tests: the ids and sizes of the reference record `tiny-112`."""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.presets import tiny_config

REFERENCE_RECORD = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "records" / "tiny-112"

PAD, IMG_CONTEXT, IMG_START, IMG_END, SEG, IM_START, IM_END = 0, 90, 91, 92, 93, 94, 95


def tiny_model(seed: int = 0, **overrides) -> Self1EForSegmentation:
    torch.manual_seed(seed)
    model = Self1EForSegmentation(tiny_config(**overrides)).eval()
    # Random init leaves the vision position embeddings and class token at zero; give them values so that tiles and
    # positions are distinguishable.
    with torch.no_grad():
        embeddings = model.model.vision_tower.embeddings
        embeddings.position_embeddings.normal_(std=0.5)
        embeddings.cls_token.normal_(std=0.5)
    return model


@dataclass
class SampleSpec:
    """One sample: an image with a tile grid (or none), some text, and `n_seg` [SEG] tokens in the answer."""

    grid: tuple[int, int] | None = (1, 1)
    n_seg: int = 1
    question: list[int] = field(default_factory=lambda: [5, 6, 7])
    answer_words: int = 1


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor | None
    tile_grids: list[tuple[int, int]]
    gt_masks: list[torch.Tensor]

    def model_inputs(self) -> dict:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "tile_grids": self.tile_grids}
        if self.pixel_values is not None:
            inputs["pixel_values"] = self.pixel_values
        return inputs


def sample_tokens(spec: SampleSpec, tokens_per_tile: int = 16) -> list[int]:
    tokens = [IM_START, *spec.question]
    if spec.grid is not None:
        tiles = spec.grid[0] * spec.grid[1]
        tokens += [IMG_START, *[IMG_CONTEXT] * (tiles * tokens_per_tile), IMG_END]
    tokens += [IM_END, IM_START]
    for index in range(spec.n_seg):
        tokens += [10 + index % 5] * spec.answer_words + [SEG]
    tokens += [11, IM_END]
    return tokens


def make_batch(specs: list[SampleSpec], seed: int = 0, tile_size: int = 112, pad_to: int | None = None) -> Batch:
    """Right-padded batch with random tiles and random ground-truth masks (sizes differ per sample)."""
    generator = torch.Generator().manual_seed(seed)
    sequences = [sample_tokens(spec) for spec in specs]
    length = max(pad_to or 0, max(map(len, sequences)))
    input_ids = torch.full((len(specs), length), PAD, dtype=torch.long)
    attention_mask = torch.zeros((len(specs), length), dtype=torch.long)
    for row, tokens in enumerate(sequences):
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        attention_mask[row, : len(tokens)] = 1
    grids = [spec.grid for spec in specs if spec.grid is not None]
    n_tiles = sum(rows * cols for rows, cols in grids)
    pixel_values = torch.randn(n_tiles, 3, tile_size, tile_size, generator=generator) if n_tiles else None
    gt_masks = []
    for index, spec in enumerate(specs):
        height, width = 40 + 8 * index, 56 + 4 * index
        gt_masks.append((torch.rand(spec.n_seg, height, width, generator=generator) > 0.5).float())
    return Batch(input_ids, attention_mask, pixel_values, grids, gt_masks)


def split_batch(batch: Batch, specs: list[SampleSpec]) -> list[Batch]:
    """The same samples one by one, unpadded, with their own tiles."""
    singles, tile_start = [], 0
    for row, spec in enumerate(specs):
        length = int(batch.attention_mask[row].sum())
        tiles = 0 if spec.grid is None else spec.grid[0] * spec.grid[1]
        pixel_values = None if tiles == 0 else batch.pixel_values[tile_start : tile_start + tiles]
        tile_start += tiles
        singles.append(
            Batch(
                batch.input_ids[row : row + 1, :length],
                batch.attention_mask[row : row + 1, :length],
                pixel_values,
                [] if spec.grid is None else [spec.grid],
                [batch.gt_masks[row]],
            )
        )
    return singles
