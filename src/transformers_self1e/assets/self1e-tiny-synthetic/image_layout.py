"""Which tiles, images and `[SEG]` tokens belong to which sample of a batch."""

from collections import defaultdict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageLayout:
    """Where each image's tiles and each sample's `[SEG]` states are.

    Attributes:
        grids: `(rows, cols)` of every image, in batch order.
        tile_offsets: index of every image's first tile in `pixel_values`. A thumbnail tile, if any, follows the
            `rows * cols` grid tiles of its image; it is read by the language model but never stitched into a mask.
        images_per_sample: indices of the images in each sample.
        seg_counts: number of `[SEG]` tokens in each sample.
        seg_state_positions: `(batch_idx, position)` of the hidden states that predict the `[SEG]` tokens, in
            sample order.
    """

    grids: list[tuple[int, int]]
    tile_offsets: list[int]
    images_per_sample: list[list[int]]
    seg_counts: list[int]
    seg_state_positions: tuple[torch.Tensor, torch.Tensor]

    def sample_grid(self, sample: int) -> tuple[int, int] | None:
        images = self.images_per_sample[sample]
        return self.grids[images[0]] if len(images) == 1 else None

    def seg_samples_by_grid(self) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for sample, count in enumerate(self.seg_counts):
            if count:
                groups[self.sample_grid(sample)].append(sample)
        return dict(groups)

    def tile_indices(self, samples: list[int], device: torch.device) -> torch.LongTensor:
        """Grid tiles (no thumbnail) of the single image of each sample, concatenated in sample order."""
        indices = []
        for sample in samples:
            image = self.images_per_sample[sample][0]
            rows, cols = self.grids[image]
            start = self.tile_offsets[image]
            indices.extend(range(start, start + rows * cols))
        return torch.tensor(indices, dtype=torch.long, device=device)


def _as_grid_list(tile_grids: torch.Tensor | list | tuple) -> list[tuple[int, int]]:
    grids = tile_grids.tolist() if isinstance(tile_grids, torch.Tensor) else list(tile_grids)
    result = []
    for grid in grids:
        if len(grid) != 2 or any(int(side) < 1 for side in grid):
            raise ValueError(f"every tile grid must be (rows, cols) with positive sides, got {grid}")
        result.append((int(grid[0]), int(grid[1])))
    return result


def plan_image_layout(
    input_ids: torch.LongTensor,
    attention_mask_2d: torch.Tensor | None,
    image_token_id: int,
    seg_token_id: int | None,
    tokens_per_tile: int,
    num_tiles: int,
    tile_grids: torch.Tensor | list | None,
    has_thumbnail: torch.Tensor | list | None = None,
) -> ImageLayout:
    """Assigns images to samples from the image-token counts and checks everything the mask head relies on."""
    if seg_token_id is None:
        raise ValueError("config.seg_token_id is not set: the model does not know its [SEG] token")
    image_tokens = (input_ids == image_token_id).sum(-1).tolist()
    if tile_grids is None:
        if any(count > tokens_per_tile for count in image_tokens):
            raise ValueError(
                "tile_grids is required when an image has several tiles "
                f"(image tokens per sample: {image_tokens}, {tokens_per_tile} per tile)"
            )
        grids = [(1, 1)] * num_tiles
    else:
        grids = _as_grid_list(tile_grids)
    thumbnails = [False] * len(grids) if has_thumbnail is None else [bool(flag) for flag in has_thumbnail]
    if len(thumbnails) != len(grids):
        raise ValueError(f"has_thumbnail has {len(thumbnails)} entries for {len(grids)} images")
    tiles_per_image = [rows * cols + thumbnail for (rows, cols), thumbnail in zip(grids, thumbnails)]
    if sum(tiles_per_image) != num_tiles:
        raise ValueError(f"tile_grids describe {sum(tiles_per_image)} tiles but pixel_values has {num_tiles}")

    tile_offsets, offset = [], 0
    for tiles in tiles_per_image:
        tile_offsets.append(offset)
        offset += tiles

    images_per_sample: list[list[int]] = []
    next_image = 0
    for sample, count in enumerate(image_tokens):
        images = []
        while count > 0 and next_image < len(grids):
            count -= tiles_per_image[next_image] * tokens_per_tile
            images.append(next_image)
            next_image += 1
        if count != 0:
            raise ValueError(
                f"sample {sample} has {image_tokens[sample]} image tokens, which do not match the tile grids "
                f"({tokens_per_tile} tokens per tile)"
            )
        images_per_sample.append(images)
    if next_image != len(grids):
        raise ValueError(f"{len(grids)} tile grids were given but the batch's image tokens cover {next_image} images")

    is_seg = input_ids == seg_token_id
    if attention_mask_2d is not None:
        is_seg = is_seg & attention_mask_2d.to(torch.bool)
    if is_seg[:, 0].any():
        raise ValueError("a [SEG] token cannot be the first token: its mask is read from the state before it")
    seg_counts = is_seg.sum(-1).tolist()
    for sample, count in enumerate(seg_counts):
        if count and len(images_per_sample[sample]) != 1:
            raise ValueError(
                f"sample {sample} has [SEG] tokens and {len(images_per_sample[sample])} images; "
                "a segmentation sample needs exactly one image"
            )
    batch_idx, positions = is_seg.nonzero(as_tuple=True)
    return ImageLayout(grids, tile_offsets, images_per_sample, seg_counts, (batch_idx, positions - 1))


__all__ = ["ImageLayout", "plan_image_layout"]
