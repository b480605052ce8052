"""Mask logits to masks: streamed in chunks with the results of one full-size pass and bounded memory; non-finite
logits are an error naming the prompt, never an empty "no target" mask."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor
from torch.nn import functional as F
from transformers_self1e.modeling import Self1EImageProcessor, mask_postprocessing
from transformers_self1e.modeling.mask_postprocessing import (
    BACKGROUND,
    CHUNK_BYTES_PER_PIXEL,
    PackedMasks,
    check_finite_mask_logits,
    label_map_from_logits,
    logits_to_prediction,
    logits_to_semantic_prediction,
    resize_mask_logits,
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


def reference_probabilities(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Every mask resized at once, as post-processing did before it streamed."""
    return F.interpolate(logits[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].sigmoid()


def varied_logits(num_masks: int, seed: int = 0) -> torch.Tensor:
    """Random canvases, some saturated (probability exactly 1 on several classes: ties) and one empty."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(num_masks, 7, 9, generator=generator) * 4
    logits[1] = 40.0
    logits[3] = 40.0
    logits[4] = logits[2]
    logits[5] = -40.0
    return logits


# 1 byte: one mask per chunk; three masks' worth: chunks of 3 that end neither at the ties nor at the end.
BUDGETS = [1, 3 * CHUNK_BYTES_PER_PIXEL * 37 * 53, 2**30]


@pytest.mark.parametrize("max_chunk_bytes", BUDGETS)
def test_streamed_masks_equal_one_full_size_pass(max_chunk_bytes):
    logits, size, threshold = varied_logits(11), (37, 53), 0.6
    prediction = logits_to_prediction(
        logits, size, threshold, return_probabilities=True, max_chunk_bytes=max_chunk_bytes
    )
    probabilities = reference_probabilities(logits, size)
    masks = probabilities > threshold
    areas = masks.flatten(1).sum(-1)
    assert torch.equal(prediction.masks, masks)
    # torch's vectorised sigmoid and its scalar tail can differ by one float32 ulp, and where the tail falls depends on
    # how many masks share a call: an older full-size pass differs from itself by as much between batch sizes.
    torch.testing.assert_close(prediction.probabilities, probabilities, rtol=0, atol=1e-7)
    assert torch.equal(prediction.no_target, areas == 0) and prediction.no_target[5]
    expected_scores = (probabilities * masks).flatten(1).sum(-1) / areas.clamp_min(1)
    torch.testing.assert_close(prediction.scores, expected_scores, rtol=1e-6, atol=0)


@pytest.mark.parametrize("max_chunk_bytes", BUDGETS)
def test_streamed_label_map_equals_one_argmax_over_all_classes(max_chunk_bytes):
    logits, size, threshold = varied_logits(11, seed=1), (37, 53), 0.5
    prediction = logits_to_semantic_prediction(logits, size, threshold, max_chunk_bytes=max_chunk_bytes)
    probabilities = reference_probabilities(logits, size)
    best, labels = probabilities.max(dim=0)
    label_map = torch.where(best > threshold, labels, BACKGROUND)
    assert torch.equal(prediction.label_map, label_map)
    assert (label_map == 1).any() and not (label_map == 3).any()  # the tie between classes 1 and 3 goes to 1
    assert torch.equal(label_map_from_logits(logits, size, threshold, max_chunk_bytes=max_chunk_bytes), label_map)
    masks = label_map == torch.arange(len(logits))[:, None, None]
    assert torch.equal(prediction.masks, masks)
    areas = masks.flatten(1).sum(-1)
    assert torch.equal(prediction.no_target, areas == 0)
    expected_scores = (probabilities * masks).flatten(1).sum(-1) / areas.clamp_min(1)
    torch.testing.assert_close(prediction.scores, expected_scores, rtol=1e-6, atol=0)
    assert prediction.probabilities is None


def test_no_masks_and_no_classes():
    empty = logits_to_prediction(torch.zeros(0, 4, 4), (5, 6))
    assert empty.masks.shape == (0, 5, 6) and empty.scores.shape == (0,)
    assert (label_map_from_logits(torch.zeros(0, 4, 4), (5, 6)) == BACKGROUND).all()


@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 8), (17, 31)])
def test_packed_masks_unpack_to_the_same_booleans(size):
    masks = torch.from_numpy(np.random.RandomState(0).rand(4, *size) > 0.5)
    packed = PackedMasks.pack(masks)
    assert packed.bits.nbytes == 4 * -(-size[0] * size[1] // 8)
    assert packed.shape == masks.shape and len(packed) == 4
    assert torch.equal(packed.unpack(), masks)
    for index in (0, 3, -1):
        assert torch.equal(packed.mask(index), masks[index])


def test_packed_masks_refuse_what_does_not_fit():
    packed = PackedMasks.zeros(2, (3, 5))
    with pytest.raises(ValueError, match=r"expected \(n, 3, 5\) booleans, got torch.float32"):
        packed.put(0, torch.ones(1, 3, 5))
    with pytest.raises(ValueError, match=r"expected \(n, 3, 5\) booleans, got torch.bool torch.Size\(\[1, 5, 3\]\)"):
        packed.put(0, torch.ones(1, 5, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"bits must be a \(num_masks, 2\) uint8 array for 3x5 masks"):
        PackedMasks(np.zeros((2, 3), dtype=np.uint8), (3, 5))


def test_bad_threshold_and_budget():
    with pytest.raises(ValueError, match="threshold must be a probability strictly between 0 and 1, got 1.0"):
        label_map_from_logits(canvas_logits(1.0), SIZE, threshold=1.0)
    with pytest.raises(ValueError, match="max_chunk_bytes must be positive, got 0"):
        logits_to_prediction(canvas_logits(1.0), SIZE, max_chunk_bytes=0)
    with pytest.raises(ValueError, match=r"mask logits must be \(num_masks, height, width\), got shape \(6, 10\)"):
        logits_to_prediction(canvas_logits(1.0)[0], SIZE)


def test_post_process_masks_threshold_is_a_probability():
    # On a canvas of the output size, resizing is the identity: sigmoid(-2, 0.5, 1, 3) = 0.12, 0.62, 0.73, 0.95.
    logits = [torch.tensor([[[-2.0, 0.5], [1.0, 3.0]]])]
    processor = Self1EImageProcessor()
    assert processor.post_process_masks(logits, [(2, 2)])[0].tolist() == [[[False, True], [True, True]]]
    assert processor.post_process_masks(logits, [(2, 2)], threshold=0.7)[0].tolist() == [
        [[False, False], [True, True]]
    ]
    assert processor.post_process_masks(logits, [(2, 2)], threshold=0.1)[0].tolist() == [[[True, True], [True, True]]]
    for threshold in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="threshold must be a probability strictly between 0 and 1"):
            processor.post_process_masks(logits, [(2, 2)], threshold=threshold)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_post_process_masks_agrees_with_the_streamed_masks(threshold):
    logits = varied_logits(6)
    masks = Self1EImageProcessor().post_process_masks([logits], [(37, 53)], threshold=threshold)[0]
    assert torch.equal(masks, reference_probabilities(logits, (37, 53)) > threshold)
    assert torch.equal(masks, logits_to_prediction(logits, (37, 53), threshold=threshold).masks)


def test_logits_are_resized_in_their_own_dtype():
    logits = varied_logits(6).to(torch.bfloat16)
    resized = resize_mask_logits(logits, (14, 18))
    assert resized.dtype == torch.bfloat16
    expected = F.interpolate(logits[:, None], size=(14, 18), mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(resized, expected)
    assert resize_mask_logits(logits[:0], (14, 18)).shape == (0, 14, 18)


# 64 masks of 1024 x 1024 pixels: resized in one pass, their float32 probabilities alone take 256 MiB, and the
# unstreamed post-processing peaked above 1 GiB; streamed in 32 MiB chunks, the packed masks take 8 MiB. The file
# is loaded alone (it needs only torch and numpy) so that the subprocess starts in a second or two. Linux's peak
# resident size (VmHWM) is reset right before the call.
PEAK_MEMORY_SCRIPT = """
import importlib.util, json, sys, torch


def kilobytes(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


spec = importlib.util.spec_from_file_location("mask_postprocessing", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
postprocess = {"prompts": module.logits_to_prediction, "classes": module.logits_to_semantic_prediction}[sys.argv[2]]
logits = torch.randn(64, 32, 32, generator=torch.Generator().manual_seed(0))
postprocess(logits[:1], (64, 64))
with open("/proc/self/clear_refs", "w") as clear_refs:
    clear_refs.write("5")
before = kilobytes("VmRSS:")
prediction = postprocess(logits, (1024, 1024), max_chunk_bytes=32 * 2**20)
print(json.dumps({"added_mib": (kilobytes("VmHWM:") - before) / 1024, "masks": len(prediction.packed_masks)}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads and resets the peak resident size in /proc")
@pytest.mark.parametrize("mode", ["prompts", "classes"])
def test_peak_memory_does_not_grow_with_the_number_of_masks(mode):
    command = [sys.executable, "-c", PEAK_MEMORY_SCRIPT, mask_postprocessing.__file__, mode]
    measured = json.loads(subprocess.run(command, capture_output=True, text=True, check=True, timeout=300).stdout)
    assert measured["masks"] == 64
    # 32 MiB of chunk, 8 MiB of packed masks, 25 bytes per pixel for the best class, and the allocator's slack
    # (glibc keeps freed chunks of this size in its heap): well under what one unstreamed pass needs.
    assert measured["added_mib"] < 250, measured
