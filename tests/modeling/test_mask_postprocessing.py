"""Mask logits to masks: non-finite logits are an error naming the prompt, never an empty "no target" mask."""

import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor
from transformers_self1e.modeling.mask_postprocessing import (
    BACKGROUND,
    check_finite_mask_logits,
    label_map_from_logits,
    logits_to_prediction,
)

SIZE = (12, 20)


def canvas_logits(*values: float) -> torch.Tensor:
    """One constant `(6, 10)` canvas of logits per value."""
    return torch.tensor(values, dtype=torch.float32)[:, None, None].expand(-1, 6, 10).clone()


def test_finite_logits_threshold_at_the_given_probability():
    prediction = logits_to_prediction(canvas_logits(3.0, -3.0, 0.5), SIZE, threshold=0.6)
    # sigmoid(3) = 0.95, sigmoid(-3) = 0.05, sigmoid(0.5) = 0.62
    assert prediction.masks.shape == (3, *SIZE)
    assert prediction.masks.flatten(1).all(-1).tolist() == [True, False, True]
    assert prediction.no_target.tolist() == [False, True, False]
    torch.testing.assert_close(prediction.scores, torch.tensor([3.0, 0.0, 0.5]).sigmoid() * torch.tensor([1, 0, 1]))
    label_map = label_map_from_logits(canvas_logits(-3.0, 1.0), SIZE)
    assert (label_map == 1).all()
    assert (label_map_from_logits(canvas_logits(-3.0, -1.0), SIZE) == BACKGROUND).all()


@pytest.mark.parametrize("bad, kind", [(float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "inf")])
@pytest.mark.parametrize("postprocess", [logits_to_prediction, label_map_from_logits])
def test_non_finite_logits_raise_naming_the_prompt(postprocess, bad, kind):
    logits = canvas_logits(2.0, 2.0, -2.0)
    logits[1, 3, 4] = bad
    with pytest.raises(ValueError, match=rf"non-finite mask logits \({kind}\) for prompt 'a dog': check the weights"):
        postprocess(logits, SIZE, prompts=["the cat", "a dog", "a car"])
    with pytest.raises(ValueError, match=r"non-finite mask logits .* for mask 1:"):
        postprocess(logits, SIZE)


def test_every_broken_prompt_and_kind_is_named():
    logits = canvas_logits(*range(8))
    logits[[0, 2, 3, 4, 5, 6, 7], 0, 0] = float("nan")
    logits[2, 1, 1] = float("inf")
    message = (
        r"\(NaN and inf\) for prompt 'p0', prompt 'p2', prompt 'p3', prompt 'p4', prompt 'p5', \.\.\. \(2 more\):"
    )
    with pytest.raises(ValueError, match=message):
        check_finite_mask_logits(logits, [f"p{index}" for index in range(8)])


def test_prompts_must_name_every_mask():
    with pytest.raises(ValueError, match="prompts names 1 masks but the logits hold 2"):
        check_finite_mask_logits(canvas_logits(1.0, 2.0), ["the cat"])


def test_segment_with_nan_weights_raises_instead_of_reporting_no_target():
    model, processor = tiny_model_and_processor()
    with torch.no_grad():
        next(model.seg_head.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite mask logits \\(NaN\\)"):
        model.segment(random_image(40, 40), "the red car", processor=processor)
