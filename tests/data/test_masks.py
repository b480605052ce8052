"""RLE helpers: round trips, unions, uncompressed counts, and every mask form the collator accepts."""

import numpy as np
import PIL.Image
import pytest
import torch

from transformers_self1e.data import decode_rle, empty_rle, encode_rle, merge_rles, to_binary_mask


def test_round_trip_and_text_counts():
    mask = np.zeros((7, 9), dtype=bool)
    mask[1:4, 2:8] = True
    mask[6, 0] = True
    rle = encode_rle(mask)
    assert rle["size"] == [7, 9] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    np.testing.assert_array_equal(decode_rle({**rle, "counts": rle["counts"].encode()}), mask)
    assert decode_rle(empty_rle(3, 5)).shape == (3, 5) and decode_rle(empty_rle(3, 5)).sum() == 0


def test_uncompressed_counts_are_column_major():
    # 3 zeros, 2 ones (rows 3..4 of column 0), then zeros: a 5 x 2 image.
    mask = decode_rle({"size": [5, 2], "counts": [3, 2, 5]})
    np.testing.assert_array_equal(mask, [[0, 0], [0, 0], [0, 0], [1, 0], [1, 0]])


def test_merge_is_the_union():
    first, second = np.zeros((4, 4), dtype=bool), np.zeros((4, 4), dtype=bool)
    first[0, :2], second[:, 3] = True, True
    merged = merge_rles([encode_rle(first), encode_rle(second)], 4, 4)
    np.testing.assert_array_equal(decode_rle(merged), first | second)
    np.testing.assert_array_equal(decode_rle(merge_rles([], 4, 4)), np.zeros((4, 4)))


@pytest.mark.parametrize(
    "convert",
    [
        lambda mask: encode_rle(mask),
        lambda mask: PIL.Image.fromarray(mask.astype(np.uint8) * 255),
        lambda mask: mask.astype(np.float32),
        lambda mask: torch.from_numpy(mask),
    ],
    ids=["rle", "pil", "array", "tensor"],
)
def test_to_binary_mask_accepts_every_form(convert):
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 1:3] = True
    binary = to_binary_mask(convert(mask))
    assert binary.dtype == torch.float32
    torch.testing.assert_close(binary, torch.from_numpy(mask).float())


def test_masks_must_be_two_dimensional():
    with pytest.raises(ValueError, match="height, width"):
        encode_rle(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="height, width"):
        to_binary_mask(np.zeros(5))


@pytest.mark.parametrize(
    "rle, error, match",
    [
        ({"counts": "x"}, ValueError, "needs 'size' and 'counts'"),
        ({"size": [4, -5], "counts": "x"}, ValueError, "two positive integers"),
        ({"size": [4], "counts": "x"}, ValueError, "two positive integers"),
        ({"size": [4, 5], "counts": "x"}, ValueError, "do not encode a 4x5 mask"),
        ({"size": [4, 5], "counts": b""}, ValueError, "do not encode a 4x5 mask"),
        ({"size": [4, 5], "counts": "zzzzzzzz"}, ValueError, "do not encode a 4x5 mask"),
        ({"size": [4, 5], "counts": "é"}, ValueError, "ASCII"),
        ({"size": [4, 5], "counts": [3, 2]}, ValueError, "cover 5 pixels, not its 4x5"),
        ({"size": [4, 5], "counts": [25, -5]}, ValueError, "non-negative integers"),
        ({"size": [4, 5], "counts": 7}, TypeError, "counts must be a str"),
        ({"size": [10**5, 10**5], "counts": "x"}, ValueError, "larger than any image"),
    ],
)
def test_malformed_run_length_masks_are_refused(rle, error, match):
    # pycocotools decodes some of these into masks of arbitrary values without an error.
    with pytest.raises(error, match=match):
        decode_rle(rle)
    with pytest.raises(error, match=match):
        merge_rles([rle], 4, 5)
