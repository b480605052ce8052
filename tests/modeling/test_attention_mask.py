"""The segmentation attention mask (paper Sec. 3.5, Table 7) against a loop-by-loop oracle and the reference record."""

import pytest
import torch
from helpers.batches import IMG_CONTEXT, REFERENCE_RECORD, SEG, SampleSpec, make_batch, tiny_model
from safetensors.torch import load_file

from transformers_self1e import build_segmentation_attention_mask
from transformers_self1e.modeling.configuration_self1e import SEGMENTATION_ATTENTIONS


def oracle_mask(input_ids: torch.Tensor, attention_mask: torch.Tensor, variant: str) -> torch.Tensor:
    """Written from the paper's description, one (query, key) pair at a time."""
    batch, length = input_ids.shape
    allowed = torch.zeros(batch, 1, length, length, dtype=torch.bool)
    for b in range(batch):
        ids = input_ids[b].tolist()
        has_seg = SEG in ids
        for q in range(length):
            for k in range(length):
                if not attention_mask[b, k]:
                    continue
                visible = k <= q
                if has_seg and variant == "bidirectional":
                    visible = True
                if has_seg and ids[q] == IMG_CONTEXT and variant.startswith("bidirectional_image"):
                    visible |= ids[k] == IMG_CONTEXT
                    if variant == "bidirectional_image_with_seg":
                        visible |= ids[k] == SEG
                allowed[b, 0, q, k] = visible
    return allowed


@pytest.mark.parametrize("variant", SEGMENTATION_ATTENTIONS)
def test_mask_matches_the_oracle_for_every_variant(variant: str) -> None:
    specs = [SampleSpec(grid=(1, 1), n_seg=2), SampleSpec(grid=None, n_seg=0), SampleSpec(grid=(1, 2), n_seg=0)]
    batch = make_batch(specs)
    built = build_segmentation_attention_mask(batch.input_ids, batch.attention_mask, IMG_CONTEXT, SEG, variant)
    assert built.dtype == torch.bool
    torch.testing.assert_close(built, oracle_mask(batch.input_ids, batch.attention_mask, variant))


def test_padding_is_never_attended() -> None:
    batch = make_batch([SampleSpec(grid=(1, 1)), SampleSpec(grid=(2, 2), n_seg=3)])
    for variant in SEGMENTATION_ATTENTIONS:
        built = build_segmentation_attention_mask(batch.input_ids, batch.attention_mask, IMG_CONTEXT, SEG, variant)
        padding_keys = ~batch.attention_mask.bool()[:, None, None, :].expand_as(built)
        assert not built[padding_keys].any()


def test_default_mask_equals_the_reference_record_on_real_tokens() -> None:
    record = load_file(REFERENCE_RECORD / "inputs_and_outputs.safetensors")
    built = build_segmentation_attention_mask(record["input_ids"], record["attention_mask_2d"], IMG_CONTEXT, SEG)
    reference = record["attention_mask_4d"] == 0
    real_queries = record["attention_mask_2d"].bool()
    # Rows of padding queries produce no output anywhere; the reference lets them see themselves, we do not.
    assert torch.equal(built[:, 0][real_queries], reference[:, 0][real_queries])


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_model_renders_the_same_mask_for_each_attention_backend(attn_implementation: str) -> None:
    # A prepared boolean 4D mask and one built from input_ids give identical outputs, on each backend.
    model = tiny_model()
    model.set_attn_implementation(attn_implementation)
    batch = make_batch([SampleSpec(grid=(1, 1), n_seg=2), SampleSpec(grid=None, n_seg=0)])
    prepared = build_segmentation_attention_mask(batch.input_ids, batch.attention_mask, IMG_CONTEXT, SEG)
    with torch.no_grad():
        built_outputs = model(**batch.model_inputs())
        prepared_outputs = model(**{**batch.model_inputs(), "attention_mask": prepared})
    real = batch.attention_mask.bool()
    torch.testing.assert_close(built_outputs.logits[real], prepared_outputs.logits[real])
    torch.testing.assert_close(built_outputs.pred_masks[0], prepared_outputs.pred_masks[0])


def test_attention_variants_change_what_image_tokens_see() -> None:
    # In the causal variant the image tokens cannot see the [SEG] token after them, so the mask does not depend on
    # whether the answer holds [SEG] at all; with image->[SEG] attention it does.
    batch = make_batch([SampleSpec(grid=(1, 1))])
    changed = batch.input_ids.clone()
    changed[changed == SEG] = 12
    image_tokens = batch.input_ids[0] == IMG_CONTEXT
    for variant, expect_equal in [("causal", True), ("bidirectional_image_with_seg", False)]:
        model = tiny_model(segmentation_attention=variant)
        with torch.no_grad():
            with_seg = model(**batch.model_inputs(), output_hidden_states=True).hidden_states[-1][0, image_tokens]
            without_seg_inputs = {**batch.model_inputs(), "input_ids": changed}
            without = model(**without_seg_inputs, output_hidden_states=True).hidden_states[-1][0, image_tokens]
        assert torch.allclose(with_seg, without, atol=1e-6) == expect_equal, variant


@pytest.mark.slow
def test_flex_attention_gives_the_sdpa_outputs() -> None:
    # Flex attention compiles the mask functions into a block mask (about 20 s on this CPU).
    model = tiny_model()
    batch = make_batch([SampleSpec(grid=(2, 1), n_seg=2), SampleSpec(grid=None, n_seg=0), SampleSpec()])
    with torch.no_grad():
        reference = model(**batch.model_inputs())
        model.set_attn_implementation("flex_attention")
        outputs = model(**batch.model_inputs())
    real = batch.attention_mask.bool()
    torch.testing.assert_close(outputs.logits[real], reference.logits[real], rtol=1e-4, atol=1e-4)
    for flex_masks, sdpa_masks in zip(outputs.pred_masks, reference.pred_masks):
        torch.testing.assert_close(flex_masks, sdpa_masks, rtol=1e-4, atol=1e-4)
