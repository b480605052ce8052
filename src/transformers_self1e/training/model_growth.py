"""Growing a trained SELF1E between training stages without changing what it computes at the start: more language-model
layers ([`deepen_language_model`]) and a 2-D position code of the ViT's patch grid ([`add_grid_position_code`]).

Both are steps of the shipped model's recipe (`make shipped-model`, `examples/finetune_synthetic.py`
`--grow-text-depth` and `--grid-position-code`).
"""

import copy
import math

import torch

from ..modeling import Self1EForSegmentation

# Highest wavelength factor of the grid position code, as in a transformer's sine-cosine code (which uses 10000 for
# thousands of positions); a grid side is a few dozen patches.
GRID_CODE_MAX_PERIOD = 100.0


def deepen_language_model(model: Self1EForSegmentation, num_layers: int) -> Self1EForSegmentation:
    """
    Returns a copy of `model` whose language model has `num_layers` decoder layers. The new layers are appended
    after the trained ones with their attention output and MLP down projections zeroed, so each adds nothing to the
    residual stream: the grown model computes exactly what `model` does, and training starts from there. Every layer
    takes the first layer's attention type (`text_config.layer_types`).

    Args:
        model ([`Self1EForSegmentation`]):
            The model to grow; it is left as it is.
        num_layers (`int`):
            Decoder layers of the grown language model, more than `model` has.

    Returns:
        [`Self1EForSegmentation`]: the grown model, every parameter trainable.

    Raises:
        ValueError: `num_layers` is not more than the model's layers.
    """
    text_config = model.config.text_config
    old_layers = text_config.num_hidden_layers
    if num_layers <= old_layers:
        raise ValueError(f"num_layers must exceed the model's {old_layers} language-model layers, got {num_layers}")
    config = copy.deepcopy(model.config)
    config.text_config.num_hidden_layers = num_layers
    config.text_config.layer_types = [text_config.layer_types[0]] * num_layers
    grown = Self1EForSegmentation(config)
    _load_trained_layers(grown, model, old_layers)
    with torch.no_grad():
        for layer in grown.model.language_model.layers[old_layers:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return grown


def _load_trained_layers(grown: Self1EForSegmentation, model: Self1EForSegmentation, old_layers: int) -> None:
    """Loads every weight of `model` into `grown`; only the layers from `old_layers` on may stay as initialised."""
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    new_names = {
        f"model.language_model.layers.{old_layers + index}.{name}"
        for index, layer in enumerate(grown.model.language_model.layers[old_layers:])
        for name, _ in layer.named_parameters()
    }
    if unexpected or set(missing) != new_names:
        raise ValueError(f"growing the language model left weights unmatched: {sorted(set(missing) ^ new_names)}")


def grid_position_code(side: int, width: int) -> torch.Tensor:
    """
    Sine-cosine code of a `side` x `side` grid in raster order: the first half of the channels encode the row, the
    second half the column, each as the sine and cosine of `width / 4` geometric frequencies from 1 down to
    `1 / GRID_CODE_MAX_PERIOD`.

    Args:
        side (`int`):
            Cells per row and per column.
        width (`int`):
            Channels of the code, a multiple of 4.

    Returns:
        `torch.Tensor` of shape `(side * side, width)`.

    Raises:
        ValueError: `width` is not a multiple of 4.
    """
    if width % 4:
        raise ValueError(f"the grid position code needs a width divisible by 4, got {width}")
    num_frequencies = width // 4
    frequencies = 1.0 / GRID_CODE_MAX_PERIOD ** (torch.arange(num_frequencies) / num_frequencies)
    angles = torch.arange(side)[:, None] * frequencies  # (side, width / 4)
    per_axis = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (side, width / 2)
    rows = per_axis[:, None].expand(side, side, -1)
    columns = per_axis[None, :].expand(side, side, -1)
    return torch.cat([rows, columns], dim=-1).reshape(side * side, width)


def add_grid_position_code(model: Self1EForSegmentation) -> None:
    """
    Adds [`grid_position_code`] to the patch part of the ViT's absolute position embeddings, in place, scaled to the
    mean norm those embeddings already have (1 where they are all zero, as in a new model), so that a trained model
    keeps most of what it learnt. A patch's column then reads as easily as its row, which the language model's
    raster order of image tokens already gives. The class-token position is left as it is.

    Args:
        model ([`Self1EForSegmentation`]):
            A model whose vision tower has absolute position embeddings over a square patch grid.

    Raises:
        ValueError: the vision tower has no absolute position embeddings.
    """
    embeddings = model.model.vision_tower.embeddings.position_embeddings
    if embeddings is None:
        raise ValueError("the grid position code needs a vision tower with absolute position embeddings")
    with torch.no_grad():
        patches = embeddings[0, 1:]
        code = grid_position_code(math.isqrt(patches.shape[0]), patches.shape[1])
        norm = patches.norm(dim=-1).mean().item() or 1.0
        patches += code * (norm / code.norm(dim=-1, keepdim=True))


__all__ = ["add_grid_position_code", "deepen_language_model", "grid_position_code"]
