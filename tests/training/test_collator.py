"""Self1EDataCollator: labels, the segmentation attention mask, mixed batches, pre-tokenized samples, the record."""

import random

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.batches import REFERENCE_RECORD, tiny_model
from helpers.tokenizer import tiny_qwen2_tokenizer
from safetensors.torch import load_file
from transformers_self1e.modeling.configuration_self1e import SEGMENTATION_ATTENTIONS
from transformers_self1e.modeling.image_processing_self1e import Self1EImageProcessor
from transformers_self1e.modeling.processing_self1e import Self1EProcessor

from transformers_self1e.data import encode_rle, make_synthetic_referring_dataset, rows_to_dataset, segmentation_row
from transformers_self1e.training import IGNORE_INDEX, Self1EDataCollator, collate_token_layout

TILE, TOKENS_PER_TILE = 112, 16


@pytest.fixture(scope="module")
def processor() -> Self1EProcessor:
    return Self1EProcessor(
        Self1EImageProcessor(size=TILE, max_tiles=4), tiny_qwen2_tokenizer(), image_seq_length=TOKENS_PER_TILE
    )


def model_for(processor: Self1EProcessor, **overrides):
    """The tiny model with the processor's token ids and vocabulary."""
    return tiny_model(
        text_config={"vocab_size": len(processor.tokenizer)},
        image_token_id=processor.image_token_id,
        seg_token_id=processor.seg_token_id,
        **overrides,
    )


def rgb(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def mixed_samples() -> list[dict]:
    """Referring (2x1 tiles), VQA with two turns, text-only, and a no-target sample (one [SEG], empty mask)."""
    wide, square = rgb(60, 120, seed=1), rgb(48, 48, seed=2)
    return [
        {"image": wide, "expression": "the red car", "masks": [box_mask(60, 120, 10, 20, 40, 90)]},
        {
            "image": square,
            "conversation": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]},
                {"role": "user", "content": [{"type": "text", "text": "Which colour is it?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Red, mostly."}]},
            ],
        },
        {"prompt": "Say hello.", "answer": "Hello there."},
        {"image": square, "expression": "the purple cat", "masks": [np.zeros((48, 48), dtype=np.uint8)]},
    ]


# ----------------------------------------------------------------------------------------------------------
# Attention mask
# ----------------------------------------------------------------------------------------------------------


def attention_by_definition(
    input_ids: torch.Tensor, padding_mask: torch.Tensor, image_id: int, seg_id: int, variant: str
) -> torch.Tensor:
    """The `(batch, 1, length, length)` mask written out from the variants' definitions (paper Table 7): a real key
    is seen causally and, in a sample with `[SEG]`, also by the queries the variant opens it to."""
    length = input_ids.shape[1]
    position = torch.arange(length)
    expected = []
    for ids, is_real in zip(input_ids, padding_mask.bool()):
        image, seg = ids == image_id, ids == seg_id
        opened = {
            "causal": torch.zeros(length, length, dtype=torch.bool),
            "bidirectional_image": image[:, None] & image[None, :],
            "bidirectional_image_with_seg": image[:, None] & (image | seg)[None, :],
            "bidirectional": torch.ones(length, length, dtype=torch.bool),
        }[variant]
        sees = (position[None, :] <= position[:, None]) | (opened & seg.any())
        expected.append(sees & is_real[None, :])
    return torch.stack(expected)[:, None]


@pytest.mark.parametrize("variant", SEGMENTATION_ATTENTIONS)
def test_4d_mask_is_the_segmentation_attention_mask_of_the_variant(processor, variant):
    padded = Self1EDataCollator(processor)(mixed_samples())
    prepared = Self1EDataCollator(processor, segmentation_attention=variant)(mixed_samples())
    assert padded["attention_mask"].ndim == 2 and prepared["attention_mask"].dtype == torch.bool
    expected = attention_by_definition(
        padded["input_ids"], padded["attention_mask"], processor.image_token_id, processor.seg_token_id, variant
    )
    assert torch.equal(prepared["attention_mask"], expected)
    # The padding mask is the diagonal; padding keys are never attended.
    diagonal = prepared["attention_mask"][:, 0].diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(diagonal.long(), padded["attention_mask"])
    assert not prepared["attention_mask"][:, 0].transpose(1, 2)[padded["attention_mask"] == 0].any()
    # Samples without [SEG] (VQA, text-only) are causal on their real tokens.
    causal = torch.ones(padded["input_ids"].shape[1], padded["input_ids"].shape[1], dtype=torch.bool).tril()
    for row in (1, 2):
        length = int(padded["attention_mask"][row].sum())
        assert torch.equal(prepared["attention_mask"][row, 0, :length, :length], causal[:length, :length])
    for key in ("input_ids", "labels"):
        torch.testing.assert_close(prepared[key], padded[key])


@pytest.mark.parametrize("variant", SEGMENTATION_ATTENTIONS)
def test_model_outputs_with_the_4d_mask_equal_those_with_its_own_mask(processor, variant):
    model = model_for(processor, segmentation_attention=variant)
    padded = Self1EDataCollator(processor)(mixed_samples())
    prepared = Self1EDataCollator.from_model_config(processor, model.config)(mixed_samples())
    assert prepared["attention_mask"].ndim == 4
    with torch.no_grad():
        own = model(**padded)
        given = model(**prepared)
    torch.testing.assert_close(given.logits, own.logits, rtol=0, atol=1e-6)
    for given_mask, own_mask in zip(given.pred_masks, own.pred_masks):
        torch.testing.assert_close(given_mask, own_mask, rtol=0, atol=1e-6)
    torch.testing.assert_close(given.loss, own.loss)


def test_collate_token_layout_reproduces_the_reference_records_mask():
    record = load_file(REFERENCE_RECORD / "inputs_and_outputs.safetensors")
    is_token = record["attention_mask_2d"].bool()
    input_ids = [ids[real] for ids, real in zip(record["input_ids"], is_token)]
    labels = [row[real] for row, real in zip(record["labels"], is_token)]
    batch = collate_token_layout(
        input_ids,
        labels,
        pad_token_id=0,
        image_token_id=90,
        seg_token_id=93,
        segmentation_attention="bidirectional_image_with_seg",
    )
    torch.testing.assert_close(batch["input_ids"], record["input_ids"])
    torch.testing.assert_close(batch["labels"], record["labels"])
    torch.testing.assert_close(batch["attention_mask"][:, 0].diagonal(dim1=-2, dim2=-1), is_token)
    reference_allowed = record["attention_mask_4d"] == 0
    # The reference lets padding query rows attend to themselves; only real query rows are compared.
    for row in range(is_token.shape[0]):
        real = is_token[row]
        assert torch.equal(batch["attention_mask"][row, 0, real], reference_allowed[row, 0, real])


# ----------------------------------------------------------------------------------------------------------
# Labels and batch contents
# ----------------------------------------------------------------------------------------------------------


def labelled_runs(input_ids: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """The contiguous runs of labelled tokens of one row."""
    runs, current = [], []
    for token, label in zip(input_ids.tolist(), labels.tolist()):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    return runs + ([current] if current else [])


def test_labels_cover_exactly_the_assistant_turns(processor):
    samples = mixed_samples()
    batch = Self1EDataCollator(processor)(samples)
    tokenizer = processor.tokenizer
    for row in range(len(samples)):
        text = tokenizer.decode(batch["input_ids"][row][batch["attention_mask"][row].bool()])
        # Independently of the template's generation markers: each assistant turn is what follows its header up to
        # and including <|im_end|>.
        answers = [part.split("<|im_end|>")[0] + "<|im_end|>" for part in text.split("<|im_start|>assistant\n")[1:]]
        runs = labelled_runs(batch["input_ids"][row], batch["labels"][row])
        assert [tokenizer.decode(run) for run in runs] == answers
        assert sum(map(len, runs)) == sum(
            len(tokenizer.encode(answer, add_special_tokens=False)) for answer in answers
        )
    assert answers == ["[SEG].<|im_end|>"]
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_mixed_batch_contents_and_forward_backward(processor):
    samples = mixed_samples()
    batch = Self1EDataCollator.from_model_config(processor, model_for(processor).config)(samples)
    assert batch["tile_grids"].tolist() == [[1, 2], [1, 1], [1, 1]]
    assert batch["has_thumbnail"].tolist() == [False, False, False]
    assert batch["pixel_values"].shape == (4, 3, TILE, TILE)
    assert [tuple(mask.shape) for mask in batch["gt_masks"]] == [(1, 60, 120), (0, 48, 48), (0, 0, 0), (1, 48, 48)]
    assert batch["gt_masks"][0].dtype == torch.float32
    torch.testing.assert_close(batch["gt_masks"][0][0], torch.from_numpy(box_mask(60, 120, 10, 20, 40, 90)).float())
    assert batch["gt_masks"][3].sum() == 0
    seg_counts = (batch["input_ids"] == processor.seg_token_id).sum(-1).tolist()
    assert seg_counts == [1, 0, 0, 1]

    model = model_for(processor).train()
    outputs = model(**batch)
    assert torch.isfinite(outputs.loss) and outputs.mask_bce_loss > 0 and outputs.text_loss > 0
    outputs.loss.backward()
    assert any(
        parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in model.seg_head.parameters()
    )
    assert model.lm_head.weight.grad.abs().sum() > 0


def test_images_kwargs_and_thumbnails(processor):
    collator = Self1EDataCollator(processor, images_kwargs={"max_tiles": 2, "use_thumbnail": True})
    batch = collator([{"image": rgb(40, 120), "expression": "a cat", "masks": [np.ones((40, 120))]}])
    assert batch["tile_grids"].tolist() == [[1, 2]] and batch["has_thumbnail"].tolist() == [True]
    assert batch["pixel_values"].shape[0] == 3
    assert (batch["input_ids"] == processor.image_token_id).sum() == 3 * TOKENS_PER_TILE


def test_schema_rows_and_synthetic_rows_collate(processor, tmp_path):
    synthetic = make_synthetic_referring_dataset(2, seed=0)
    rows = []
    for index, row in enumerate(synthetic):
        mask = np.asarray(row["mask"]) > 0
        # Synthetic rows (`expression` + a PIL `mask`) collate as they are.
        batch = Self1EDataCollator(processor)([row])
        torch.testing.assert_close(batch["gt_masks"][0][0], torch.from_numpy(mask).float())
        path = tmp_path / f"synthetic_{index}.png"
        row["image"].save(path)
        rows.append(
            segmentation_row(path, row["expression"], encode_rle(mask), "referring", "synthetic", random.Random(index))
        )
    # The same samples as schema rows: an image path, a training prompt, an RLE mask.
    dataset = rows_to_dataset(rows)
    batch = Self1EDataCollator(processor)(list(dataset))
    for row, mask in zip(synthetic, batch["gt_masks"]):
        torch.testing.assert_close(mask[0], torch.from_numpy(np.asarray(row["mask"]) > 0).float())
    assert (batch["input_ids"] == processor.seg_token_id).sum(-1).tolist() == [1, 1]


def test_pretokenized_samples_pass_through_unchanged(processor):
    collator = Self1EDataCollator(processor)
    raw = mixed_samples()
    batch = collator(raw)
    pretokenized = []
    for row, sample in enumerate(raw):
        length = int(batch["attention_mask"][row].sum())
        pretokenized.append(
            {
                "input_ids": batch["input_ids"][row, :length].tolist(),
                "labels": batch["labels"][row, :length].tolist(),
                "image": sample.get("image"),
                "masks": sample.get("masks"),
                # a conversation next to input_ids is not rendered again
                "conversation": [{"role": "user", "content": "ignored"}],
            }
        )
    again = collator(pretokenized)
    for key in ("input_ids", "labels", "attention_mask", "pixel_values", "tile_grids", "has_thumbnail"):
        torch.testing.assert_close(again[key], batch[key])
    for mask, expected in zip(again["gt_masks"], batch["gt_masks"]):
        torch.testing.assert_close(mask, expected)

    # Labels default to the input ids; padding given with the sample is dropped.
    single = collator([{"input_ids": [5, 6, 7, 0, 0], "attention_mask": [1, 1, 1, 0, 0]}])
    assert single["input_ids"].tolist() == [[5, 6, 7]] and single["labels"].tolist() == [[5, 6, 7]]
    assert "pixel_values" not in single and tuple(single["gt_masks"][0].shape) == (0, 0, 0)


def test_max_length_truncates_text_and_drops_masks_of_cut_seg_tokens(processor):
    sample = mixed_samples()[0]
    full = Self1EDataCollator(processor)([sample])
    seg_position = int((full["input_ids"][0] == processor.seg_token_id).nonzero()[0, 0])
    cut = Self1EDataCollator(processor, max_length=seg_position)([sample])
    assert cut["input_ids"].shape[1] == seg_position
    torch.testing.assert_close(cut["input_ids"][0], full["input_ids"][0, :seg_position])
    assert tuple(cut["gt_masks"][0].shape) == (0, 60, 120)
    with pytest.raises(ValueError, match="cuts into the image tokens"):
        Self1EDataCollator(processor, max_length=20)([sample])


@pytest.mark.parametrize(
    "sample, match",
    [
        ({"image": rgb(32, 32), "expression": "a cat", "masks": []}, "1 \\[SEG\\] tokens but 0 masks"),
        ({"image": rgb(32, 32), "prompt": "What?", "answer": "Nothing.", "masks": [np.ones((32, 32))]}, "0 \\[SEG\\]"),
        ({"expression": "a cat", "masks": [np.ones((32, 32))]}, "1 image items but the sample has no image"),
        ({"image": rgb(32, 32), "prompt": "What?"}, "no answer"),
        ({"image": rgb(32, 32)}, "needs a conversation"),
        ({"input_ids": [1, 2, 3], "image": rgb(32, 32)}, "0 image tokens but its image takes 16"),
        ({"input_ids": [1e30]}, r"samples\[0\]: input_ids must be one sequence of integers"),
        ({"input_ids": [[1, 2], [3]]}, "input_ids must be one sequence of integers"),
        ({"input_ids": [1, 10**9]}, r"input_ids holds 1000000000, outside \[0, "),
        ({"input_ids": [1, -1]}, "input_ids holds -1"),
        ({"input_ids": []}, "input_ids is empty"),
        ({"input_ids": [1, 2], "labels": [1, -7]}, r"labels holds -7, outside .*\(or \[-100\]\)"),
        ({"input_ids": [1, 2], "labels": [1]}, "labels has 1 entries, input_ids 2"),
        ({"input_ids": [1], "attention_mask": []}, "attention_mask has 0 entries, input_ids 1"),
        ({"input_ids": [1, 2], "attention_mask": [0, 0]}, "attention_mask has no 1"),
        ({"input_ids": [1, 2], "attention_mask": [1, 2]}, r"attention_mask holds 2, outside \[0, 1\]"),
        ({"input_ids": [True, False]}, "input_ids must be one sequence of integers"),
        (
            {
                "image": rgb(32, 32),
                "conversation": [
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Both?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "[SEG] and [SEG]."}]},
                ],
                "masks": [np.ones((32, 32)), np.ones((16, 16))],
            },
            r"samples\[0\]\['masks'\]\[1\] is 16x16 \(height x width\) but its image is 32x32",
        ),
    ],
)
def test_bad_samples_raise(processor, sample, match):
    with pytest.raises(ValueError, match=match):
        Self1EDataCollator(processor)([sample])


def test_bad_arguments_raise(processor):
    with pytest.raises(ValueError, match="segmentation_attention"):
        Self1EDataCollator(processor, segmentation_attention="sideways")
    with pytest.raises(ValueError, match="max_length"):
        Self1EDataCollator(processor, max_length=0)
    with pytest.raises(ValueError, match="seg_token_id"):
        Self1EDataCollator.from_model_config(processor, tiny_model().config)


# ----------------------------------------------------------------------------------------------------------
# Row validation: bad masks and conversations fail naming the row, the field and the problem
# ----------------------------------------------------------------------------------------------------------


def segmentation_sample(mask, image=None, **extra) -> dict:
    return {"image": image if image is not None else rgb(32, 48), "expression": "a cat", "masks": [mask], **extra}


def conversation_sample(*messages, masks=()) -> dict:
    """A sample with the image item in the first message and the given (role, text) messages."""
    conversation = [{"role": role, "content": [{"type": "text", "text": text}]} for role, text in messages]
    conversation[0]["content"].insert(0, {"type": "image"})
    return {"image": rgb(32, 32), "conversation": conversation, "masks": list(masks)}


INSIDE = box_mask(32, 48, 4, 6, 20, 30).astype(bool)


@pytest.mark.parametrize(
    "mask",
    [
        INSIDE,
        INSIDE.astype(np.uint8),
        INSIDE.astype(np.float32),
        INSIDE.astype(np.uint8) * 255,
        PIL.Image.fromarray(INSIDE.astype(np.uint8) * 255),
        PIL.Image.fromarray(INSIDE),
        torch.from_numpy(INSIDE.astype(np.int64)),
        encode_rle(INSIDE),
    ],
    ids=["bool", "uint8-01", "float-01", "uint8-0255", "pil-L", "pil-1", "tensor-01", "rle"],
)
def test_every_unambiguous_mask_form_gives_the_same_target(processor, mask):
    batch = Self1EDataCollator(processor)([segmentation_sample(mask)])
    torch.testing.assert_close(batch["gt_masks"][0][0], torch.from_numpy(INSIDE).float())


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.where(INSIDE, 0.95, 0.05), r"samples\[0\]\['masks'\]\[0\] holds values other than.*0\.05"),
        (np.where(INSIDE, 1, -1), r"samples\[0\]\['masks'\]\[0\] holds values other than.*-1"),
        (np.where(INSIDE, 255.0, 0.0), r"samples\[0\]\['masks'\]\[0\] holds values other than.*255"),
        (np.where(INSIDE, 255, 1).astype(np.uint8), r"samples\[0\]\['masks'\]\[0\] holds values other than.*1, 255"),
        (np.where(INSIDE, np.nan, 0.0), r"samples\[0\]\['masks'\]\[0\] holds values other than.*nan"),
        (INSIDE.T, r"samples\[0\]\['masks'\]\[0\] is 48x32 \(height x width\) but its image is 32x48"),
        (INSIDE[:16], r"samples\[0\]\['masks'\]\[0\] is 16x48 \(height x width\) but its image is 32x48"),
        (np.full((32, 48), "a"), r"samples\[0\]\['masks'\]\[0\] must be boolean or numeric"),
    ],
    ids=["soft", "signed", "float-255", "uint8-1-255", "nan", "transposed", "other-size", "strings"],
)
def test_ambiguous_or_misfitting_masks_raise(processor, mask, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Self1EDataCollator(processor)([segmentation_sample(mask)])


def test_errors_name_the_row_by_batch_index_and_id_column(processor):
    good = segmentation_sample(INSIDE, sample_id=3)
    bad = segmentation_sample(INSIDE.T, sample_id=17)
    with pytest.raises(ValueError, match=r"samples\[1\] \(sample_id=17\)\['masks'\]\[0\] is 48x32"):
        Self1EDataCollator(processor)([good, bad])
    with pytest.raises(ValueError, match=r"samples\[0\] \(id='row-9'\)\['mask'\] holds values"):
        Self1EDataCollator(processor)(
            [{"image": rgb(32, 48), "expression": "a cat", "mask": INSIDE - 0.5, "id": "row-9"}]
        )


def test_the_image_size_is_read_before_resizing_from_a_path_or_an_array(processor, tmp_path):
    path = tmp_path / "image.png"
    rgb(32, 48).save(path)
    for image in (str(path), np.asarray(rgb(32, 48))):
        batch = Self1EDataCollator(processor)([segmentation_sample(INSIDE, image=image)])
        assert tuple(batch["gt_masks"][0].shape) == (1, 32, 48)
        with pytest.raises(ValueError, match="is 48x32 .* but its image is 32x48"):
            Self1EDataCollator(processor)([segmentation_sample(INSIDE.T, image=image)])


@pytest.mark.parametrize(
    "sample, match",
    [
        (
            conversation_sample(("user", "Find [SEG] here."), ("assistant", "[SEG]."), masks=[np.ones((32, 32))] * 2),
            r"samples\[0\]\['conversation'\]\[0\] \(role 'user'\) contains \[SEG\]",
        ),
        (
            conversation_sample(("user", "Segment the cat.")),
            r"samples\[0\]\['conversation'\] has no assistant turn",
        ),
        (
            conversation_sample(("user", "Segment the cat."), ("bot", "[SEG].")),
            r"samples\[0\]\['conversation'\]\[1\] has role 'bot'",
        ),
        (
            {"image": rgb(32, 32), "prompt": "Find [SEG].", "answer": "[SEG].", "masks": [np.ones((32, 32))] * 2},
            r"samples\[0\] has \[SEG\] tokens outside the answer \(unlabelled positions \[\d+\]\)",
        ),
        (
            {"input_ids": [5, 6, 7], "masks": [INSIDE]},
            r"samples\[0\] has masks but no image",
        ),
    ],
    ids=["seg-in-user-turn", "no-assistant-turn", "unknown-role", "seg-in-prompt", "masks-without-image"],
)
def test_bad_conversations_raise(processor, sample, match):
    with pytest.raises(ValueError, match=match):
        Self1EDataCollator(processor)([sample])


def test_pretokenized_seg_tokens_must_be_labelled(processor):
    seg = processor.seg_token_id
    sample = {"input_ids": [5, seg, 7, seg], "labels": [5, IGNORE_INDEX, 7, IGNORE_INDEX]}
    with pytest.raises(
        ValueError, match=r"samples\[0\] has \[SEG\] tokens outside the answer \(unlabelled positions \[1, 3\]\)"
    ):
        Self1EDataCollator(processor)([sample])
