"""The SELF1E segmentation head: image features at high resolution and a `[SEG]` embedding, no mask decoder.

Shapes use `d` for the language model's hidden size, `f` for the pixel-shuffle factor per side (2 in InternVL3),
`g` for the ViT grid of one tile (32 for 448-px tiles) and `g / f` for the LLM grid of one tile.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN

from .configuration_self1e import Self1EConfig


def pixel_unshuffle(features: torch.Tensor, factor: int) -> torch.Tensor:
    """Exact inverse of InternVL's pixel shuffle (`ps_version="v2"`), on any grid.

    InternVL's shuffle puts the feature of pixel `(f*i + di, f*j + dj)` into channel block `di * f + dj` of token
    `(i, j)`. This puts it back.

    Args:
        features: `(..., h, w, f*f*c)` channels-last grid.
        factor: the shuffle factor `f` per side.

    Returns:
        `(..., h*f, w*f, c)`.
    """
    *batch, height, width, channels = features.shape
    out_channels = channels // (factor * factor)
    features = features.reshape(*batch, height, width, factor, factor, out_channels)
    features = features.movedim(-3, -4)  # (..., h, f_row, w, f_col, c)
    return features.reshape(*batch, height * factor, width * factor, out_channels)


def stitch_tiles(tile_features: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Lay the token grids of an image's tiles (raster order, row by row) out as one canvas.

    Args:
        tile_features: `(n_images, rows*cols, side*side, c)`, tokens of each tile in row-major order.

    Returns:
        `(n_images, rows*side, cols*side, c)`.
    """
    n_images, n_tiles, n_tokens, channels = tile_features.shape
    side = math.isqrt(n_tokens)
    if n_tiles != rows * cols or side * side != n_tokens:
        raise ValueError(f"cannot stitch {n_tiles} tiles of {n_tokens} tokens into a {rows}x{cols} grid")
    canvas = tile_features.reshape(n_images, rows, cols, side, side, channels)
    canvas = canvas.permute(0, 1, 3, 2, 4, 5)  # (n, rows, side_y, cols, side_x, c)
    return canvas.reshape(n_images, rows * side, cols * side, channels)


def is_dense_weight(weight: torch.Tensor) -> bool:
    """Whether `weight` can be read as a matrix: a floating-point tensor in memory, neither offloaded by accelerate
    (on the meta device outside its layer's forward) nor quantized (a torchao tensor subclass, bitsandbytes' integers)."""
    return (
        type(weight) in (torch.Tensor, nn.Parameter)
        and weight.dtype.is_floating_point
        and weight.device.type != "meta"
    )


def read_back(linear: nn.Linear, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(v W, v . b)` for the layer `y = x W^T + b` and vectors `v` of its output space.

    An offloaded or quantized layer is only defined by its forward (bitsandbytes even replaces the class): the forward
    of the identity rows and of a zero row gives `W^T + b` and `b`."""
    if is_dense_weight(linear.weight):
        return vectors @ linear.weight, vectors @ linear.bias
    basis = torch.eye(linear.in_features + 1, linear.in_features, dtype=vectors.dtype, device=vectors.device)
    outputs = linear(basis)
    bias = outputs[-1]
    return vectors @ (outputs[:-1] - bias).T, vectors @ bias


class Self1EMLP(nn.Module):
    """Two-layer MLP `d -> d -> out_features` with GELU."""

    def __init__(self, hidden_size: int, out_features: int, hidden_act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(hidden_size, out_features)

    def hidden(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The activations before the last linear layer."""
        return self.act(self.fc1(hidden_states))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.hidden(hidden_states))


class Self1EPixelUnshuffleMLP(Self1EMLP):
    """MLP-with-pixel-unshuffle `f_PUS` (paper Sec. 3.4): restores `f*f` features from each compressed token."""

    def __init__(self, hidden_size: int, factor: int):
        super().__init__(hidden_size, hidden_size * factor * factor)
        self.factor = factor

    def restore_grid(self, grid: torch.Tensor) -> torch.Tensor:
        """`(..., h, w, d)` -> `(..., h*f, w*f, d)`."""
        return pixel_unshuffle(self(grid), self.factor)

    def restore_token(self, tokens: torch.Tensor) -> torch.Tensor:
        """`(..., d)` -> `(..., d)`: the mean of the `f*f` restored features (Eq. 6)."""
        restored = self(tokens)
        return restored.unflatten(-1, (self.factor * self.factor, -1)).mean(-2)


class Self1ESegmentationHead(nn.Module):
    """Turns image features and `[SEG]` hidden states into mask logits `F_IMG' . F_SEG'^T / sqrt(d)` (Eq. 1).

    `config.image_feature_path` selects the image features (paper Table 5):
    - `"llm_low_res"`: the LLM's image tokens, on the compressed grid.
    - `"high_res"`: `F_V1^HQ`, the projector applied to self-replicated ViT features (Sec. 3.3), on the ViT grid.
    - `"residual_refill"` (RFR): `F_V1^HQ + up(F_IMG - F_V1)` (Eq. 2-3), on the ViT grid.
    - `"residual_amplifier"` (RFR + RFA): `f_PUS(F_V1^HQ) + up(f'_PUS(F_IMG) - f_PUS(F_V1))` (Eq. 4-5), on twice the
      ViT grid, with `F_SEG' = mean(f'_PUS(F_SEG))` (Eq. 6).
    Both image and `[SEG]` embeddings pass through `output_mlp` last.

    `F_IMG` depends on the prompt (it comes out of the language model), `F_V1` and `F_V1^HQ` do not: they are given
    once per image, with `image_of_sample` saying which image each prompt shows, and what only they determine
    (`f_PUS(F_V1)`, `f_PUS(F_V1^HQ)`) is computed once per image however many prompts ask about it.
    """

    def __init__(self, config: Self1EConfig):
        super().__init__()
        hidden_size = config.text_config.hidden_size
        self.feature_path = config.image_feature_path
        self.factor = config.shuffle_factor
        self.scale = hidden_size**-0.5
        if self.feature_path == "residual_amplifier":
            # f_PUS: shared by features that did not go through the LLM (F_V1 and F_V1^HQ).
            self.vision_unshuffle_mlp = Self1EPixelUnshuffleMLP(hidden_size, self.factor)
            # f'_PUS: for LLM-processed features (F_IMG) and the [SEG] state.
            self.llm_unshuffle_mlp = Self1EPixelUnshuffleMLP(hidden_size, self.factor)
        self.output_mlp = Self1EMLP(hidden_size, hidden_size)

    def embed_seg(self, seg_states: torch.Tensor) -> torch.Tensor:
        """`F_SEG'` from the hidden states that predict `[SEG]`: `(..., d)` -> `(..., d)`."""
        if self.feature_path == "residual_amplifier":
            seg_states = self.llm_unshuffle_mlp.restore_token(seg_states)
        return self.output_mlp(seg_states)

    def image_hidden_states(
        self,
        llm_features: torch.Tensor,
        projected_features: torch.Tensor,
        high_res_features: torch.Tensor,
        image_of_sample: torch.LongTensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`F_IMG'` up to the last linear layer of `output_mlp`, on stitched canvases, plus the low-resolution
        embedding of the LLM features alone. [`~Self1ESegmentationHead.mask_logits`] applies that last layer to the
        `[SEG]` side instead, which is the same product at a fraction of the cost on the large canvas.

        Args:
            llm_features (`torch.Tensor` of shape `(n, H, W, d)`):
                `F_IMG` of each of the `n` samples, on the LLM grid.
            projected_features (`torch.Tensor` of shape `(m, H, W, d)`):
                `F_V1` of each of the `m` images, the LLM's input image embeddings.
            high_res_features (`torch.Tensor` of shape `(m, f*H, f*W, d)`):
                `F_V1^HQ` of each image, on the ViT grid.
            image_of_sample (`torch.LongTensor` of shape `(n,)`, *optional*):
                The image each sample shows; by default sample `i` shows image `i`.

        Returns:
            The hidden states (`(n, h, w, d)`, `h` depending on the feature path) and the auxiliary low-resolution
            embedding used by the training loss (`None` for `"llm_low_res"`, where it is `F_IMG'` itself).
        """
        if self.feature_path == "llm_low_res":
            return self.output_mlp.hidden(llm_features), None
        low_res = self.output_mlp(llm_features)
        if self.feature_path == "high_res":
            return _per_sample(self.output_mlp.hidden(high_res_features), image_of_sample), low_res
        if self.feature_path == "residual_refill":
            residual = llm_features - _per_sample(projected_features, image_of_sample)
            residual = self._upsample(residual, high_res_features.shape[-3:-1])
            return self.output_mlp.hidden(_per_sample(high_res_features, image_of_sample) + residual), low_res
        restored_llm = self.llm_unshuffle_mlp.restore_grid(llm_features)
        amplified_residual = self._amplified_residual(restored_llm, projected_features, image_of_sample)
        high_res = _per_sample(self.vision_unshuffle_mlp.restore_grid(high_res_features), image_of_sample)
        amplified_residual = self._upsample(amplified_residual, high_res.shape[-3:-1])
        return self.output_mlp.hidden(high_res + amplified_residual), restored_llm

    def mask_logits(self, image_hidden: torch.Tensor, seg_embeddings: torch.Tensor) -> torch.Tensor:
        """`F_IMG' . F_SEG' / sqrt(d)` from `image_hidden_states`: `(n, h, w, d)` x `(n, s, d)` -> `(n, s, h, w)`.

        `fc2(x) . s = x . (s W2) + b2 . s`, so the last layer of `output_mlp` acts on the `s` `[SEG]` embeddings
        rather than on every canvas position."""
        readout, offset = read_back(self.output_mlp.fc2, seg_embeddings)
        logits = torch.einsum("nhwd,nsd->nshw", image_hidden, readout) + offset[..., None, None]
        return logits * self.scale

    def mask_logits_by_rows(
        self,
        llm_features: torch.Tensor,
        projected_features: torch.Tensor,
        high_res_features: torch.Tensor,
        seg_embeddings: torch.Tensor,
        rows_per_chunk: int,
        image_of_sample: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """The same mask logits as `mask_logits(image_hidden_states(...)[0], seg_embeddings)`, computed a band of
        `rows_per_chunk` ViT rows at a time, so that no `d`-channel tensor of the whole high-resolution canvas is ever
        held: what inference on many tiles needs. Only for the default `"residual_amplifier"` path.

        Bilinear upsampling by two is shift-equivariant, so a band upsampled with one source row of margin on each
        side gives exactly the rows of the full upsampling."""
        if self.feature_path != "residual_amplifier":
            raise ValueError("mask_logits_by_rows computes the residual_amplifier feature path only")
        restored_llm = self.llm_unshuffle_mlp.restore_grid(llm_features)
        residual = self._amplified_residual(restored_llm, projected_features, image_of_sample)
        rows, cols = high_res_features.shape[1:3]
        factor = self.factor
        bands = []
        for start in range(0, rows, rows_per_chunk):
            stop = min(rows, start + rows_per_chunk)
            high_res = self.vision_unshuffle_mlp.restore_grid(high_res_features[:, start:stop])
            low, high = max(0, start - 1), min(rows, stop + 1)
            window = self._upsample(residual[:, low:high], ((high - low) * factor, cols * factor))
            offset = (start - low) * factor
            upsampled = window[:, offset : offset + (stop - start) * factor]
            hidden = self.output_mlp.hidden(_per_sample(high_res, image_of_sample) + upsampled)
            bands.append(self.mask_logits(hidden, seg_embeddings))
        return torch.cat(bands, dim=-2)

    def dot_logits(self, image_embeddings: torch.Tensor, seg_embeddings: torch.Tensor) -> torch.Tensor:
        """Plain scaled dot products `(n, h, w, d)` x `(n, s, d)` -> `(n, s, h, w)` (the low-resolution prediction)."""
        return torch.einsum("nhwd,nsd->nshw", image_embeddings, seg_embeddings) * self.scale

    def _amplified_residual(
        self,
        restored_llm: torch.Tensor,
        projected_features: torch.Tensor,
        image_of_sample: torch.LongTensor | None,
    ) -> torch.Tensor:
        """`F_RFA = f'_PUS(F_IMG) - f_PUS(F_V1)` (Eq. 4) per sample, `f_PUS(F_V1)` computed once per image."""
        return restored_llm - _per_sample(self.vision_unshuffle_mlp.restore_grid(projected_features), image_of_sample)

    @staticmethod
    def _upsample(grid: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Bilinear (align_corners=False) resize of a channels-last grid `(n, h, w, d)` to `size`."""
        resized = F.interpolate(grid.permute(0, 3, 1, 2), size=tuple(size), mode="bilinear", align_corners=False)
        return resized.permute(0, 2, 3, 1)


def _per_sample(per_image: torch.Tensor, image_of_sample: torch.LongTensor | None) -> torch.Tensor:
    """The rows of a per-image tensor that each sample shows (all of them, in order, without `image_of_sample`)."""
    return per_image if image_of_sample is None else per_image[image_of_sample]


__all__ = ["Self1ESegmentationHead", "pixel_unshuffle", "stitch_tiles"]
