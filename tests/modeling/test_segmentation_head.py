"""Pixel-unshuffle and tile stitching on every grid shape, checked against transformers' own pixel shuffle."""

import pytest
import torch
from helpers.batches import SampleSpec, make_batch, tiny_model
from torch import nn
from torch.nn import functional as F
from transformers.models.internvl.modeling_internvl import InternVLModel
from transformers_self1e.modeling.segmentation_head import pixel_unshuffle, read_back, stitch_tiles

GRIDS = [(1, 1), (2, 1), (1, 3), (2, 2), (3, 2)]


@pytest.mark.parametrize("height, width", [(8, 8), (4, 8), (8, 4), (6, 10), (2, 2)])
def test_pixel_unshuffle_inverts_internvl_pixel_shuffle(height: int, width: int) -> None:
    features = torch.randn(3, height, width, 5)
    shuffled = InternVLModel.pixel_shuffle(None, features, scale_factor=0.5)
    assert shuffled.shape == (3, height // 2, width // 2, 20)
    torch.testing.assert_close(pixel_unshuffle(shuffled, 2), features, rtol=0, atol=0)


def test_pixel_unshuffle_places_each_feature_at_its_pixel() -> None:
    # A grid whose feature is its own (row, col) must come back with every pixel holding its own coordinates.
    rows, cols = torch.meshgrid(torch.arange(6), torch.arange(4), indexing="ij")
    coordinates = torch.stack([rows, cols], dim=-1).float()[None]
    restored = pixel_unshuffle(InternVLModel.pixel_shuffle(None, coordinates, scale_factor=0.5), 2)
    torch.testing.assert_close(restored, coordinates, rtol=0, atol=0)


@pytest.mark.parametrize("rows, cols", GRIDS)
def test_stitch_tiles_lays_raster_order_tiles_out_as_the_image(rows: int, cols: int) -> None:
    side, channels = 4, 3
    image = torch.randn(2, rows * side, cols * side, channels)
    tiles = []  # cut the image into tiles by hand, row by row, each tile flattened row-major
    for row in range(rows):
        for col in range(cols):
            tile = image[:, row * side : (row + 1) * side, col * side : (col + 1) * side]
            tiles.append(tile.reshape(2, side * side, channels))
    torch.testing.assert_close(stitch_tiles(torch.stack(tiles, dim=1), rows, cols), image, rtol=0, atol=0)


def test_stitch_tiles_rejects_a_wrong_tile_count() -> None:
    with pytest.raises(ValueError, match="2x2"):
        stitch_tiles(torch.zeros(1, 3, 16, 4), 2, 2)


@pytest.mark.parametrize("rows, cols", GRIDS)
def test_high_res_masks_put_each_tile_at_its_grid_position(rows: int, cols: int) -> None:
    # With the high-res feature path every mask pixel depends on its own tile only, so each block of the canvas
    # must equal the mask computed from that tile alone.
    model = tiny_model(image_feature_path="high_res")
    batch = make_batch([SampleSpec(grid=(rows, cols))])
    with torch.no_grad():
        outputs = model(**batch.model_inputs(), output_hidden_states=True)
        mask = outputs.pred_masks[0][0]
        features = model.get_segmentation_image_features(batch.pixel_values).high_res_features
        seg_position = int((batch.input_ids[0] == 93).nonzero()[0, 0]) - 1
        seg = model.seg_head.embed_seg(outputs.hidden_states[-1][0, seg_position])
        side = model.config.vit_grid_size
        assert mask.shape == (rows * side, cols * side)
        for tile_index in range(rows * cols):
            row, col = divmod(tile_index, cols)
            tile_embeddings = model.seg_head.output_mlp(features[tile_index]).view(side, side, -1)
            expected = tile_embeddings @ seg * model.seg_head.scale
            block = mask[row * side : (row + 1) * side, col * side : (col + 1) * side]
            torch.testing.assert_close(block, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, cols", GRIDS)
def test_default_masks_follow_the_stitched_canvas(rows: int, cols: int) -> None:
    # Recompute RFR + RFA (Eq. 4-6) for one image, stitching tiles by hand, and compare with the model.
    model = tiny_model()
    batch = make_batch([SampleSpec(grid=(rows, cols))])
    head = model.seg_head
    with torch.no_grad():
        outputs = model(**batch.model_inputs(), output_hidden_states=True)
        image = model.get_segmentation_image_features(batch.pixel_values)
        hidden = outputs.hidden_states[-1][0]
        llm_tokens = hidden[batch.input_ids[0] == 90]
        llm_side, vit_side = model.config.llm_grid_size, model.config.vit_grid_size

        def by_hand(per_tile: torch.Tensor, side: int) -> torch.Tensor:
            canvas = torch.zeros(rows * side, cols * side, per_tile.shape[-1])
            for tile_index in range(rows * cols):
                row, col = divmod(tile_index, cols)
                block = per_tile[tile_index].reshape(side, side, -1)
                canvas[row * side : (row + 1) * side, col * side : (col + 1) * side] = block
            return canvas[None]

        llm = by_hand(llm_tokens.view(rows * cols, -1, llm_tokens.shape[-1]), llm_side)
        projected = by_hand(image.projected_features, llm_side)
        high_res = by_hand(image.high_res_features, vit_side)
        embeddings = head.output_mlp.fc2(head.image_hidden_states(llm, projected, high_res)[0])
        seg_position = int((batch.input_ids[0] == 93).nonzero()[0, 0]) - 1
        seg = head.embed_seg(hidden[seg_position])
        expected = (embeddings[0] @ seg) * head.scale
    assert outputs.pred_masks[0].shape == (1, 2 * vit_side * rows, 2 * vit_side * cols)
    torch.testing.assert_close(outputs.pred_masks[0][0], expected, rtol=1e-5, atol=1e-5)


def test_folded_replication_equals_the_projector_on_repeated_features() -> None:
    # F_V1^HQ is defined as the projector applied to each patch feature repeated f*f times (paper Sec. 3.3).
    model = tiny_model()
    with torch.no_grad():
        projector = model.model.multi_modal_projector
        projector.layer_norm.weight.normal_()
        projector.layer_norm.bias.normal_()
        patches = torch.randn(3, 64, model.config.vision_config.hidden_size)
        expected = projector(patches.repeat(1, 1, 4))
        torch.testing.assert_close(model._project_replicated(patches), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 1), (1, 3), (3, 2)])
@pytest.mark.parametrize("rows_per_chunk", [1, 3, 8, 100])
def test_mask_logits_by_rows_equal_the_whole_canvas(rows: int, cols: int, rows_per_chunk: int) -> None:
    head = tiny_model().seg_head
    side = 4  # LLM tokens per tile side; the ViT grid is twice that
    llm = torch.randn(2, rows * side, cols * side, 64)
    projected = torch.randn(2, rows * side, cols * side, 64)
    high_res = torch.randn(2, 2 * rows * side, 2 * cols * side, 64)
    seg = torch.randn(2, 3, 64)
    with torch.no_grad():
        whole = head.mask_logits(head.image_hidden_states(llm, projected, high_res)[0], seg)
        banded = head.mask_logits_by_rows(llm, projected, high_res, seg, rows_per_chunk)
    assert banded.shape == whole.shape == (2, 3, 4 * rows * side, 4 * cols * side)
    torch.testing.assert_close(banded, whole, rtol=1e-5, atol=1e-5)


class Int8Linear(nn.Linear):
    """Weight-only int8, stored as bitsandbytes and torchao store it: integers and a scale per output row, dequantized
    in forward."""

    def __init__(self, dense: nn.Linear):
        super().__init__(dense.in_features, dense.out_features)
        scale = dense.weight.detach().abs().amax(1, keepdim=True) / 127
        self.weight = nn.Parameter((dense.weight.detach() / scale).round().to(torch.int8), requires_grad=False)
        self.register_buffer("scale", scale)
        self.bias = dense.bias

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.linear(inputs, self.weight.float() * self.scale, self.bias)


def test_read_back_reads_a_quantized_layer_through_its_forward() -> None:
    torch.manual_seed(0)
    dense = nn.Linear(16, 8)
    quantized = Int8Linear(dense)
    vectors = torch.randn(2, 3, 8)
    with torch.no_grad():
        readout, offset = read_back(quantized, vectors)
        torch.testing.assert_close(readout, vectors @ (quantized.weight.float() * quantized.scale))
        torch.testing.assert_close(offset, vectors @ dense.bias)
        assert read_back(dense, vectors)[0].equal(vectors @ dense.weight)


def test_quantized_head_and_projector_give_the_masks_of_their_dequantized_weights() -> None:
    # The folded projector and the [SEG] read-out cannot read quantized weights: they go through the layers' forward.
    batch = make_batch([SampleSpec(grid=(2, 1), n_seg=2)]).model_inputs()
    quantized, dequantized = tiny_model(), tiny_model()
    for model, layer in ((quantized, Int8Linear), (dequantized, dequantized_copy)):
        projector, output_mlp = model.model.multi_modal_projector, model.seg_head.output_mlp
        projector.linear_1, output_mlp.fc2 = layer(projector.linear_1), layer(output_mlp.fc2)
    with torch.no_grad():
        for masks, expected in zip(quantized(**batch).pred_masks, dequantized(**batch).pred_masks, strict=True):
            torch.testing.assert_close(masks, expected, rtol=1e-4, atol=1e-4)


def dequantized_copy(dense: nn.Linear) -> nn.Linear:
    """A dense layer with the weights `Int8Linear(dense)` computes with."""
    quantized = Int8Linear(dense)
    copy = nn.Linear(dense.in_features, dense.out_features)
    copy.weight.data, copy.bias.data = quantized.weight.float() * quantized.scale, dense.bias.data.clone()
    return copy
