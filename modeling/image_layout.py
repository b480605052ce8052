"""Which image each sample of a batch shows, where that image's tiles are, and where the sample's `[SEG]` states are."""

from collections import defaultdict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageLayout:
    """Where each image's tiles and each sample's `[SEG]` states are.

    Attributes:
        grids: `(rows, cols)` of every image, in the order of `pixel_values`.
        tile_offsets: row of every image's first tile in `pixel_values`, plus the number of tiles as a last entry. A
            thumbnail tile, if any, follows the `rows * cols` grid tiles of its image; it is read by the language model
            but never stitched into a mask.
        images_per_sample: indices of the images each sample shows.
        seg_counts: number of `[SEG]` tokens in each sample.
        seg_state_positions: `(batch_idx, position)` of the hidden states that predict the `[SEG]` tokens, in sample
            order.
    """

    grids: list[tuple[int, int]]
    tile_offsets: list[int]
    images_per_sample: list[list[int]]
    seg_counts: list[int]
    seg_state_positions: tuple[torch.Tensor, torch.Tensor]

    def sample_grid(self, sample: int) -> tuple[int, int] | None:
        """The tile grid of the sample's image, `None` unless it shows exactly one."""
        images = self.images_per_sample[sample]
        return self.grids[images[0]] if len(images) == 1 else None

    def seg_samples_by_grid(self) -> dict[tuple[int, int], list[int]]:
        """The samples with `[SEG]` tokens, grouped by the tile grid of their image."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for sample, count in enumerate(self.seg_counts):
            if count:
                groups[self.sample_grid(sample)].append(sample)
        return dict(groups)

    @property
    def shows_images_in_order(self) -> bool:
        """Whether the samples show every image once, in order, so that the image tokens stand for all tiles."""
        return [image for images in self.images_per_sample for image in images] == list(range(len(self.grids)))

    def image_tiles_of_samples(self, device: torch.device) -> torch.LongTensor:
        """Rows of `pixel_values` the language model's image tokens stand for: every tile (thumbnail included) of each
        sample's images, in sample order."""
        indices = [
            tile
            for images in self.images_per_sample
            for image in images
            for tile in range(self.tile_offsets[image], self.tile_offsets[image + 1])
        ]
        return torch.tensor(indices, dtype=torch.long, device=device)

    def grid_tiles(self, images: list[int], device: torch.device) -> torch.LongTensor:
        """Rows of `pixel_values` that hold the grid tiles (no thumbnail) of `images`, concatenated in that order."""
        indices = []
        for image in images:
            rows, cols = self.grids[image]
            indices.extend(range(self.tile_offsets[image], self.tile_offsets[image] + rows * cols))
        return torch.tensor(indices, dtype=torch.long, device=device)

    def language_model_grid_tiles(self, samples: list[int], device: torch.device) -> torch.LongTensor:
        """Among the language model's image tiles (every sample's tiles, in sample order), the grid tiles of the
        single image of each of `samples`, concatenated in that order."""
        sample_starts = [0]
        for images in self.images_per_sample:
            tiles = sum(self.tile_offsets[image + 1] - self.tile_offsets[image] for image in images)
            sample_starts.append(sample_starts[-1] + tiles)
        indices = []
        for sample in samples:
            rows, cols = self.grids[self.images_per_sample[sample][0]]
            indices.extend(range(sample_starts[sample], sample_starts[sample] + rows * cols))
        return torch.tensor(indices, dtype=torch.long, device=device)


def plan_image_layout(
    input_ids: torch.LongTensor,
    attention_mask_2d: torch.Tensor | None,
    image_token_id: int,
    seg_token_id: int | None,
    tokens_per_tile: int,
    num_tiles: int,
    tile_grids: torch.Tensor | list | None,
    has_thumbnail: torch.Tensor | list | None = None,
    prompt_to_image: torch.Tensor | list | None = None,
) -> ImageLayout:
    """Assigns images to samples and checks everything the mask head relies on.

    Without `prompt_to_image`, each sample's image tokens stand for the next images of `pixel_values`, in order (as
    `Self1EProcessor.__call__` lays a batch out). With it, sample `i` shows image `prompt_to_image[i]`, and
    `pixel_values` may hold an image once for several samples (as `Self1EProcessor.prepare_segmentation_inputs` does).

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            The tokens, where the image and `[SEG]` tokens are counted.
        attention_mask_2d (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            Padding mask; `[SEG]` ids in padding are not `[SEG]` tokens.
        image_token_id (`int`), seg_token_id (`int`):
            Ids of the image and `[SEG]` tokens.
        tokens_per_tile (`int`):
            Image tokens per tile.
        num_tiles (`int`):
            Rows of `pixel_values` (or of the image features).
        tile_grids (`torch.Tensor` or `list` of shape `(num_images, 2)`, *optional*):
            `(rows, cols)` of every image; without it every image is one tile.
        has_thumbnail (`torch.Tensor` or `list` of shape `(num_images,)`, *optional*):
            Whether each image's tiles end with a thumbnail.
        prompt_to_image (`torch.Tensor` or `list` of shape `(batch_size,)`, *optional*):
            The image each sample shows.

    Raises:
        ValueError: when the tiles, grids, image tokens and `[SEG]` tokens do not fit together, naming the sample.
    """
    if seg_token_id is None:
        raise ValueError("config.seg_token_id is not set: the model does not know its [SEG] token")
    image_tokens = (input_ids == image_token_id).sum(-1).tolist()
    grids, tiles_per_image = _image_grids(tile_grids, has_thumbnail, num_tiles, image_tokens, tokens_per_tile)
    tile_offsets = torch.tensor([0, *tiles_per_image]).cumsum(0).tolist()
    tokens_per_image = [tiles * tokens_per_tile for tiles in tiles_per_image]
    if prompt_to_image is None:
        images_per_sample = _images_in_order(image_tokens, tokens_per_image, tokens_per_tile)
    else:
        images_per_sample = _images_by_index(prompt_to_image, image_tokens, tokens_per_image)
    seg_counts, seg_state_positions = _seg_states(input_ids, attention_mask_2d, seg_token_id, images_per_sample)
    return ImageLayout(grids, tile_offsets, images_per_sample, seg_counts, seg_state_positions)


def _image_grids(
    tile_grids: torch.Tensor | list | None,
    has_thumbnail: torch.Tensor | list | None,
    num_tiles: int,
    image_tokens: list[int],
    tokens_per_tile: int,
) -> tuple[list[tuple[int, int]], list[int]]:
    """Every image's `(rows, cols)` and number of tiles, checked against the tiles given."""
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
    return grids, tiles_per_image


def _as_grid_list(tile_grids: torch.Tensor | list | tuple) -> list[tuple[int, int]]:
    grids = tile_grids.tolist() if isinstance(tile_grids, torch.Tensor) else list(tile_grids)
    result = []
    for grid in grids:
        if len(grid) != 2 or any(int(side) < 1 for side in grid):
            raise ValueError(f"every tile grid must be (rows, cols) with positive sides, got {grid}")
        result.append((int(grid[0]), int(grid[1])))
    return result


def _images_in_order(image_tokens: list[int], tokens_per_image: list[int], tokens_per_tile: int) -> list[list[int]]:
    """Each sample's image tokens take the next images, in order; all images must be taken."""
    images_per_sample: list[list[int]] = []
    next_image = 0
    for sample, count in enumerate(image_tokens):
        images = []
        while count > 0 and next_image < len(tokens_per_image):
            count -= tokens_per_image[next_image]
            images.append(next_image)
            next_image += 1
        if count != 0:
            raise ValueError(
                f"sample {sample} has {image_tokens[sample]} image tokens, which do not match the tile grids "
                f"({tokens_per_tile} tokens per tile)"
            )
        images_per_sample.append(images)
    if next_image != len(tokens_per_image):
        raise ValueError(
            f"{len(tokens_per_image)} tile grids were given but the batch's image tokens cover {next_image} images"
        )
    return images_per_sample


def _images_by_index(
    prompt_to_image: torch.Tensor | list, image_tokens: list[int], tokens_per_image: list[int]
) -> list[list[int]]:
    """Sample `i` shows image `prompt_to_image[i]`, whose tiles its image tokens must match."""
    images = torch.as_tensor(prompt_to_image).tolist()
    if len(images) != len(image_tokens):
        raise ValueError(f"prompt_to_image has {len(images)} entries for a batch of {len(image_tokens)} samples")
    for sample, (image, count) in enumerate(zip(images, image_tokens)):
        if not 0 <= image < len(tokens_per_image):
            raise ValueError(f"prompt_to_image[{sample}] is {image}, but there are {len(tokens_per_image)} images")
        if count != tokens_per_image[image]:
            raise ValueError(
                f"sample {sample} has {count} image tokens, but its image {image} has {tokens_per_image[image]}"
            )
    return [[image] for image in images]


def _seg_states(
    input_ids: torch.LongTensor,
    attention_mask_2d: torch.Tensor | None,
    seg_token_id: int,
    images_per_sample: list[list[int]],
) -> tuple[list[int], tuple[torch.Tensor, torch.Tensor]]:
    """The number of `[SEG]` tokens of each sample and the positions of the states that predict them."""
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
    return seg_counts, (batch_idx, positions - 1)


__all__ = ["ImageLayout", "plan_image_layout"]
