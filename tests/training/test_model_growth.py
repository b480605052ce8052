"""Growing a model between training stages: a deeper language model that starts as the same function, and a grid
position code that makes a patch's row and column linearly readable."""

import math

import pytest
import torch
from helpers.batches import SampleSpec, make_batch, tiny_model

from transformers_self1e.training import add_grid_position_code, deepen_language_model, grid_position_code


def test_grown_language_model_starts_as_the_same_function():
    model = tiny_model()
    weights_before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    depth = model.config.text_config.num_hidden_layers
    grown = deepen_language_model(model, depth + 2).eval()
    assert grown.config.text_config.num_hidden_layers == len(grown.model.language_model.layers) == depth + 2
    assert len(grown.config.text_config.layer_types) == depth + 2
    assert model.config.text_config.num_hidden_layers == depth  # the grown model has a config of its own

    batch = make_batch([SampleSpec(grid=(1, 1), n_seg=2), SampleSpec(grid=(2, 1))])
    with torch.no_grad():
        before, after = model(**batch.model_inputs()), grown(**batch.model_inputs())
    torch.testing.assert_close(after.logits, before.logits)
    for grown_masks, masks in zip(after.pred_masks, before.pred_masks, strict=True):
        torch.testing.assert_close(grown_masks, masks)
    # The new layers are trainable and do compute something once their zeroed projections move.
    new_layers = grown.model.language_model.layers[depth:]
    assert all(parameter.requires_grad for parameter in new_layers.parameters())
    with torch.no_grad():
        new_layers[0].mlp.down_proj.weight.normal_()
        moved = grown(**batch.model_inputs())
    assert not torch.allclose(moved.logits, before.logits)
    # The model it grew from is untouched.
    assert all(torch.equal(weights_before[name], tensor) for name, tensor in model.state_dict().items())


def test_a_language_model_only_grows():
    model = tiny_model()
    depth = model.config.text_config.num_hidden_layers
    for num_layers in (depth, depth - 1):
        with pytest.raises(ValueError, match=f"num_layers must exceed the model's {depth}"):
            deepen_language_model(model, num_layers)


def test_grid_position_code_values_follow_the_sine_cosine_definition():
    side, width = 5, 8  # two frequencies per axis: 1 and 1 / sqrt(100)
    code = grid_position_code(side, width)
    assert code.shape == (side * side, width)
    row, column = 3, 1
    frequencies = [1.0, 0.1]
    expected = [math.sin(row * f) for f in frequencies] + [math.cos(row * f) for f in frequencies]
    expected += [math.sin(column * f) for f in frequencies] + [math.cos(column * f) for f in frequencies]
    torch.testing.assert_close(code[row * side + column], torch.tensor(expected))


def test_grid_position_code_makes_row_and_column_linearly_readable():
    code = grid_position_code(16, 96)
    rows, columns = torch.arange(256) // 16, torch.arange(256) % 16
    features = torch.cat([code, torch.ones(256, 1)], dim=1).double()
    for coordinate in (rows, columns):
        fit = torch.linalg.pinv(features) @ coordinate[:, None].double()
        assert (features @ fit).squeeze().sub(coordinate).abs().max() < 0.05
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_position_code(16, 30)


def test_grid_position_code_is_added_to_the_patch_positions_at_their_mean_norm():
    model = tiny_model()
    embeddings = model.model.vision_tower.embeddings.position_embeddings
    before = embeddings.detach().clone()
    add_grid_position_code(model)
    added = embeddings.detach()[0, 1:] - before[0, 1:]
    torch.testing.assert_close(embeddings.detach()[0, 0], before[0, 0])  # the class token's position
    torch.testing.assert_close(added.norm(dim=-1), before[0, 1:].norm(dim=-1).mean().expand(added.shape[0]))
    side = math.isqrt(added.shape[0])
    torch.testing.assert_close(added / added.norm(dim=-1, keepdim=True), _unit_rows(grid_position_code(side, 32)))


def test_grid_position_code_on_zero_embeddings_has_unit_norm():
    model = tiny_model()
    embeddings = model.model.vision_tower.embeddings.position_embeddings
    with torch.no_grad():
        embeddings.zero_()
    add_grid_position_code(model)
    torch.testing.assert_close(embeddings.detach()[0, 1:].norm(dim=-1), torch.ones(embeddings.shape[1] - 1))


def test_grid_position_code_needs_absolute_position_embeddings():
    model = tiny_model()
    model.model.vision_tower.embeddings.position_embeddings = None
    with pytest.raises(ValueError, match="absolute position embeddings"):
        add_grid_position_code(model)


def _unit_rows(code: torch.Tensor) -> torch.Tensor:
    return code / code.norm(dim=-1, keepdim=True)
