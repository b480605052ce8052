"""Segmentation metrics on tiny masks; every expected number is worked out by hand in the comments."""

import math
import warnings

import numpy as np
import pytest
import torch

from transformers_self1e.evaluation import ReferringSegmentationMetrics, SemanticSegmentationMetrics, logits_to_mask

# The reference's epsilons (I / (U + 1e-5) per sample, sum / (N + 1e-5) for gIoU) move values by ~1e-5 at most.
APPROX = 1e-4


def masks(*rows_per_mask: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows_per_mask, dtype=torch.bool)


# Sample A: gt = pred = the full 2x2 square -> I = 4, U = 4, IoU = 1.
# Sample B: gt = top-left pixel, pred = bottom-right pixel -> I = 0, U = 2, IoU = 0.
GT_AB = masks([[1, 1], [1, 1]], [[1, 0], [0, 0]])
PRED_AB = masks([[1, 1], [1, 1]], [[0, 0], [0, 1]])


def test_ciou_and_giou_differ():
    metrics = ReferringSegmentationMetrics()
    metrics.update(PRED_AB, GT_AB)
    result = metrics.compute()
    # cIoU = (4 + 0) / (4 + 2) = 2/3 ; gIoU = (1 + 0) / 2 = 1/2.
    assert result["ciou"] == pytest.approx(2 / 3, abs=APPROX)
    assert result["giou"] == pytest.approx(0.5, abs=APPROX)
    assert result["num_samples"] == 2


def test_streaming_and_numpy_match_one_batch():
    metrics = ReferringSegmentationMetrics()
    metrics.update(PRED_AB[0].numpy(), GT_AB[0].numpy())  # single (H, W) numpy sample
    metrics.update(PRED_AB[1:].to(torch.uint8), GT_AB[1:].to(torch.int64))  # (1, H, W) integer tensors
    batched = ReferringSegmentationMetrics()
    batched.update(PRED_AB, GT_AB)
    assert metrics.compute() == pytest.approx(batched.compute(), nan_ok=True)


def test_reference_epsilons_exactly():
    # One 1x2 sample: gt = [1, 1], pred = [1, 0] -> I = 1, U = 2.
    metrics = ReferringSegmentationMetrics()
    metrics.update(masks([[1, 0]]), masks([[1, 1]]))
    result = metrics.compute()
    assert result["giou"] == pytest.approx((1 / (2 + 1e-5)) / (1 + 1e-5), rel=1e-12)
    assert result["ciou"] == pytest.approx(1 / (2 + 1e-10), rel=1e-12)


def test_no_target_samples_gres_rule():
    gt = masks(
        [[0, 0], [0, 0]],  # s1: no target
        [[0, 0], [0, 0]],  # s2: no target
        [[1, 1], [0, 0]],  # s3: target
        [[0, 0], [1, 1]],  # s4: target
    )
    pred = masks(
        [[0, 0], [0, 0]],  # s1: empty -> N correct, IoU 1, adds I = 0, U = 0
        [[0, 1], [0, 0]],  # s2: 1 pixel -> N wrong, IoU 0, adds I = 0, U = 1
        [[1, 0], [0, 0]],  # s3: non-empty -> T correct, I = 1, U = 2, IoU 1/2
        [[0, 0], [0, 0]],  # s4: empty -> T wrong, I = 0, U = 2, IoU 0
    )
    metrics = ReferringSegmentationMetrics()
    metrics.update(pred, gt)
    result = metrics.compute()
    assert result["n_acc"] == 0.5  # 1 of 2 no-target samples predicted empty
    assert result["t_acc"] == 0.5  # 1 of 2 target samples predicted non-empty
    assert result["giou"] == pytest.approx((1 + 0 + 0.5 + 0) / 4, abs=APPROX)  # 0.375
    assert result["ciou"] == pytest.approx((0 + 0 + 1 + 0) / (0 + 1 + 2 + 2), abs=APPROX)  # 0.2
    assert (result["num_no_target"], result["num_target"]) == (2, 2)

    flagged = ReferringSegmentationMetrics()
    flagged.update(pred, gt, no_target=[True, True, False, False])
    assert flagged.compute() == result


def test_all_no_target_predicted_empty():
    # Both samples empty in gt and prediction: IoU 1 each, cIoU = 0 / (0 + 1e-10) = 0 as in the reference.
    metrics = ReferringSegmentationMetrics()
    metrics.update(masks([[0, 0]], [[0, 0]]), masks([[0, 0]], [[0, 0]]))
    result = metrics.compute()
    assert result["giou"] == pytest.approx(1.0, abs=APPROX)
    assert result["ciou"] == 0.0
    assert result["n_acc"] == 1.0
    assert math.isnan(result["t_acc"])  # no target sample


def test_accuracies_are_nan_without_their_samples():
    metrics = ReferringSegmentationMetrics()
    metrics.update(PRED_AB, GT_AB)
    result = metrics.compute()
    assert math.isnan(result["n_acc"])
    assert result["t_acc"] == 1.0  # both predictions are non-empty


def test_no_samples_gives_nan():
    result = ReferringSegmentationMetrics().compute()
    assert math.isnan(result["ciou"]) and math.isnan(result["giou"])
    assert result["num_samples"] == 0


def test_min_pixels_scores_small_predictions_as_empty():
    gt = masks([[0, 0], [0, 0]], [[1, 1], [0, 0]])
    pred = masks([[0, 1], [0, 0]], [[1, 0], [0, 0]])  # one pixel each, below min_pixels = 2
    metrics = ReferringSegmentationMetrics(min_pixels=2)
    metrics.update(pred, gt)
    result = metrics.compute()
    # Sample 1 (no target) counts as predicted empty: N correct, IoU 1, adds nothing.
    # Sample 2 (target) counts as empty: T wrong, I = 0, U = 2, IoU 0.
    assert (result["n_acc"], result["t_acc"]) == (1.0, 0.0)
    assert result["giou"] == pytest.approx(0.5, abs=APPROX)
    assert result["ciou"] == 0.0


def test_ignore_index_pixels_count_nowhere():
    # gt = [[1, 255], [0, 0]], pred = [[1, 1], [0, 0]]: the ignored pixel drops out -> I = 1, U = 1.
    gt = torch.tensor([[1, 255], [0, 0]], dtype=torch.uint8)
    pred = masks([[1, 1], [0, 0]])[0]
    metrics = ReferringSegmentationMetrics()
    metrics.update(pred, gt)
    assert metrics.compute()["ciou"] == pytest.approx(1.0, abs=APPROX)
    assert metrics.compute()["giou"] == pytest.approx(1.0, abs=APPROX)


def test_logit_zero_is_background():
    logits = torch.tensor([[0.0, 1e-6], [-1e-6, 3.0]])
    assert logits_to_mask(logits, (2, 2)).tolist() == [[False, True], [False, True]]
    # Scored against gt = top row: pred = {(0,1), (1,1)} -> I = 1, U = |{(0,0), (0,1), (1,1)}| = 3.
    metrics = ReferringSegmentationMetrics()
    metrics.update(logits, masks([[1, 1], [0, 0]]))
    assert metrics.compute()["ciou"] == pytest.approx(1 / 3, abs=APPROX)


def test_float_zero_one_masks_threshold_like_logits():
    # A float 0/1 mask is read as logits: 0.0 is not > 0 and 1.0 is, so it scores as the binary mask itself.
    as_float = ReferringSegmentationMetrics()
    as_float.update(PRED_AB.float(), GT_AB)
    as_bool = ReferringSegmentationMetrics()
    as_bool.update(PRED_AB, GT_AB)
    assert as_float.compute() == pytest.approx(as_bool.compute(), nan_ok=True)


def test_logits_resized_bilinear_then_thresholded():
    # Width 2 -> 4 with align_corners=False samples source x = (x' + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25;
    # clamped to [0, 1] and interpolated from [-1, 3]: -1, 0.75*-1 + 0.25*3 = 0, 0.25*-1 + 0.75*3 = 2, 3.
    # Both rows are equal, so height 2 -> 4 repeats them. Threshold > 0 -> columns 2 and 3; column 1 sits at 0.
    logits = torch.tensor([[-1.0, 3.0], [-1.0, 3.0]])
    expected = [[False, False, True, True]] * 4
    assert logits_to_mask(logits, (4, 4)).tolist() == expected
    assert logits_to_mask(logits.numpy()[None], (4, 4)).tolist() == [expected]  # batched numpy input

    # gt = columns 1 and 2 of a 4x4 mask: I = column 2 (4 px), U = columns 1, 2, 3 (12 px) -> IoU 1/3.
    gt = torch.zeros(4, 4, dtype=torch.bool)
    gt[:, 1:3] = True
    metrics = ReferringSegmentationMetrics()
    metrics.update(logits, gt)
    assert metrics.compute()["ciou"] == pytest.approx(1 / 3, abs=APPROX)
    assert metrics.compute()["giou"] == pytest.approx(1 / 3, abs=APPROX)


@pytest.mark.parametrize(
    ("preds", "gt", "no_target", "message"),
    [
        (PRED_AB, GT_AB[0], None, "preds hold 2 mask"),
        (PRED_AB, torch.zeros(1, 2, 2, 2), None, r"\(H, W\) or \(N, H, W\)"),
        (torch.zeros(2), GT_AB, None, r"preds must have shape \(H, W\) or \(N, H, W\)"),
        (PRED_AB, torch.tensor([[[0, 2], [1, 1]], [[0, 0], [0, 0]]]), None, "gt_masks must be binary"),
        (PRED_AB, GT_AB.float() * 0.5, None, "gt_masks must be binary"),
        (torch.zeros(2, 3, 3, dtype=torch.bool), GT_AB, None, "spatial size"),
        (torch.full((2, 2, 2), 2), GT_AB, None, "0/1"),
        (PRED_AB, GT_AB, [True, False], r"no_target\[0\]=True but gt mask 0 has positive pixels"),
        (PRED_AB, GT_AB, [False], "1 flag"),
        (PRED_AB.tolist(), GT_AB, None, "torch.Tensor or a numpy.ndarray"),
    ],
)
def test_referring_bad_input(preds, gt, no_target, message):
    error = TypeError if isinstance(preds, list) else ValueError
    with pytest.raises(error, match=message):
        ReferringSegmentationMetrics().update(preds, gt, no_target=no_target)


def test_target_flag_on_empty_gt_is_rejected():
    with pytest.raises(ValueError, match=r"no_target\[0\]=False but gt mask 0 has no positive pixel"):
        ReferringSegmentationMetrics().update(masks([[0, 0]]), masks([[0, 0]]), no_target=False)


def test_ignore_value_rejected_when_disabled():
    with pytest.raises(ValueError, match="gt_masks must be binary"):
        ReferringSegmentationMetrics(ignore_index=None).update(masks([[1, 0]]), torch.tensor([[1, 255]]))


def test_bad_constructor_and_logits_arguments():
    with pytest.raises(ValueError, match="min_pixels"):
        ReferringSegmentationMetrics(min_pixels=0)
    with pytest.raises(ValueError, match="ignore_index"):
        ReferringSegmentationMetrics(ignore_index=1)
    with pytest.raises(ValueError, match="floating dtype"):
        logits_to_mask(torch.ones(2, 2, dtype=torch.int64), (2, 2))
    with pytest.raises(ValueError, match="size must be"):
        logits_to_mask(torch.ones(2, 2), (2,))


# Semantic segmentation, 4 classes, 255 = ignore:
#   gt   = [[0, 0, 1],      pred = [[0, 1, 1],
#           [1, 255, 255]]          [2, 3, 0]]
# Kept pixels (gt, pred): (0, 0), (0, 1), (1, 1), (1, 2); the two ignored pixels (preds 3 and 0) drop out.
#   class 0: TP 1, GT 2, PRED 1 -> union 2 -> IoU 1/2
#   class 1: TP 1, GT 2, PRED 2 -> union 3 -> IoU 1/3
#   class 2: TP 0, GT 0, PRED 1 -> union 1 -> only predicted: detectron2 leaves it out, mmseg counts IoU 0
#   class 3: TP 0, GT 0, PRED 0 (its pixel is ignored) -> union 0 -> left out by both
SEM_GT = np.array([[0, 0, 1], [1, 255, 255]], dtype=np.uint8)
SEM_PRED = np.array([[0, 1, 1], [2, 3, 0]], dtype=np.int64)


def test_miou_detectron2_rule():
    metrics = SemanticSegmentationMetrics(num_classes=4)
    metrics.update(SEM_PRED, SEM_GT)
    result = metrics.compute()
    assert result["miou"] == pytest.approx((1 / 2 + 1 / 3) / 2)  # 5/12
    np.testing.assert_allclose(result["per_class_iou"], [1 / 2, 1 / 3, np.nan, np.nan])
    assert result["num_counted_classes"] == 2


def test_miou_mmseg_rule():
    metrics = SemanticSegmentationMetrics(num_classes=4, class_rule="mmseg")
    metrics.update(SEM_PRED, SEM_GT)
    result = metrics.compute()
    assert result["miou"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)  # 5/18
    np.testing.assert_allclose(result["per_class_iou"], [1 / 2, 1 / 3, 0.0, np.nan])


def test_confusion_matrix_and_streaming():
    metrics = SemanticSegmentationMetrics(num_classes=4)
    metrics.update(torch.from_numpy(SEM_PRED[:1]), torch.from_numpy(SEM_GT[:1]))  # first row as a (1, W) map
    metrics.update(SEM_PRED[None, 1:], SEM_GT[None, 1:])  # second row as a (1, 1, W) batch
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 1] = expected[1, 2] = 1  # rows gt, columns pred
    np.testing.assert_array_equal(metrics.confusion_matrix, expected)
    assert metrics.compute()["miou"] == pytest.approx(5 / 12)


def test_miou_nan_safe_without_pixels():
    metrics = SemanticSegmentationMetrics(num_classes=3)
    metrics.update(np.zeros((2, 2), dtype=np.int64), np.full((2, 2), 255))  # every pixel ignored
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.compute()
    assert math.isnan(result["miou"])
    assert np.isnan(result["per_class_iou"]).all()


@pytest.mark.parametrize(
    ("pred", "gt", "message"),
    [
        (np.zeros((2, 3)), SEM_GT, "pred_labels must be an integer label map"),
        (SEM_PRED, SEM_GT[:, :2], "differs from gt_labels shape"),
        (SEM_PRED, np.array([[0, 0, 4], [1, 1, 1]]), r"gt_labels must hold labels in \[0, 4\) or 255"),
        (np.array([[0, 0, 1], [1, -1, 0]]), SEM_GT, r"pred_labels must hold labels in \[0, 4\); found .* \[-1\]"),
        (SEM_PRED[None, None], SEM_GT[None, None], r"\(H, W\) or \(N, H, W\)"),
    ],
)
def test_semantic_bad_input(pred, gt, message):
    with pytest.raises(ValueError, match=message):
        SemanticSegmentationMetrics(num_classes=4).update(pred, gt)


def test_semantic_bad_constructor_arguments():
    with pytest.raises(ValueError, match="is a class label"):
        SemanticSegmentationMetrics(num_classes=4, ignore_index=3)
    with pytest.raises(ValueError, match="class_rule"):
        SemanticSegmentationMetrics(num_classes=4, class_rule="voc")
    with pytest.raises(ValueError, match="num_classes"):
        SemanticSegmentationMetrics(num_classes=0)
