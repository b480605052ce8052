"""Self1EForSegmentation: outputs, batching, ablation variants, dtypes, checkpointing, save/load and input errors."""

import copy

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import safe_open
from helpers.batches import SEG, Batch, SampleSpec, make_batch, split_batch, tiny_model
from helpers.remote_code import run_without_package
from transformers import AutoModel, InternVLForConditionalGeneration

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.presets import tiny_config
from transformers_self1e.modeling.configuration_self1e import IMAGE_FEATURE_PATHS, SEGMENTATION_ATTENTIONS

MIXED = [SampleSpec(grid=(2, 1), n_seg=2), SampleSpec(grid=None, n_seg=0), SampleSpec(grid=(1, 3)), SampleSpec()]


def labels_for(batch: Batch) -> torch.Tensor:
    labels = batch.input_ids.clone()
    labels[batch.attention_mask == 0] = -100
    labels[:, :4] = -100
    return labels


def test_outputs_have_one_mask_per_seg_token_on_the_stitched_canvas() -> None:
    model = tiny_model()
    batch = make_batch(MIXED)
    with torch.no_grad():
        outputs = model(**batch.model_inputs())
    side = 2 * model.config.vit_grid_size
    assert [tuple(mask.shape) for mask in outputs.pred_masks] == [
        (2, 2 * side, side),
        (0, 0, 0),
        (1, side, 3 * side),
        (1, side, side),
    ]
    assert outputs.logits.shape == (*batch.input_ids.shape, model.config.text_config.vocab_size)
    assert outputs.loss is None and outputs.text_loss is None and outputs.mask_bce_loss is None


def test_batched_masks_equal_one_by_one_masks() -> None:
    model = tiny_model()
    batch = make_batch(MIXED)
    with torch.no_grad():
        batched = model(**batch.model_inputs())
        for row, single in enumerate(split_batch(batch, MIXED)):
            alone = model(**single.model_inputs())
            torch.testing.assert_close(batched.pred_masks[row], alone.pred_masks[0], rtol=1e-4, atol=1e-4)
            length = single.input_ids.shape[1]
            torch.testing.assert_close(batched.logits[row, :length], alone.logits[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("same_size", [False, True], ids=["sizes-differ", "sizes-shared"])
def test_mask_losses_are_a_per_sample_sum_divided_by_the_batch_size(same_size: bool) -> None:
    # Weights other than the defaults, so that a loss ignoring the config's weights would show.
    model = tiny_model(bce_loss_weight=3.0, dice_loss_weight=0.25).train()
    specs = MIXED
    if same_size:
        # Samples whose predictions and masks share sizes (here the first and third) are scored together.
        specs = [SampleSpec(n_seg=2), SampleSpec(grid=None, n_seg=0), SampleSpec(), SampleSpec(grid=(2, 1))]
    batch = make_batch(specs)
    if same_size:
        generator = torch.Generator().manual_seed(3)
        batch.gt_masks = [(torch.rand(len(gt), 48, 64, generator=generator) > 0.5).float() for gt in batch.gt_masks]
    outputs = model(**batch.model_inputs(), gt_masks=batch.gt_masks)
    singles = [model(**single.model_inputs(), gt_masks=single.gt_masks) for single in split_batch(batch, specs)]
    expected_bce = sum(single.mask_bce_loss for single in singles) / len(specs)
    expected_dice = sum(single.mask_dice_loss for single in singles) / len(specs)
    torch.testing.assert_close(outputs.mask_bce_loss, expected_bce, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.mask_dice_loss, expected_dice, rtol=1e-4, atol=1e-5)
    config = model.config
    expected_loss = config.bce_loss_weight * outputs.mask_bce_loss + config.dice_loss_weight * outputs.mask_dice_loss
    torch.testing.assert_close(outputs.loss, expected_loss)


def test_vqa_only_batch_is_the_plain_internvl_causal_model() -> None:
    model = tiny_model()
    specs = [SampleSpec(grid=(1, 1), n_seg=0), SampleSpec(grid=None, n_seg=0)]
    batch = make_batch(specs)
    internvl = InternVLForConditionalGeneration(model.config).eval()
    missing, _ = internvl.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    labels = labels_for(batch)
    with torch.no_grad():
        outputs = model(**batch.model_inputs(), labels=labels)
        inputs = {key: value for key, value in batch.model_inputs().items() if key != "tile_grids"}
        expected = internvl(**inputs, labels=labels)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(outputs.logits[real], expected.logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs.loss, expected.loss)
    assert all(mask.shape[0] == 0 for mask in outputs.pred_masks)


@pytest.mark.parametrize("feature_path", IMAGE_FEATURE_PATHS)
@pytest.mark.parametrize("attention", SEGMENTATION_ATTENTIONS)
def test_every_ablation_variant_trains(feature_path: str, attention: str) -> None:
    model = tiny_model(image_feature_path=feature_path, segmentation_attention=attention).train()
    batch = make_batch(MIXED)
    outputs = model(**batch.model_inputs(), labels=labels_for(batch), gt_masks=batch.gt_masks)
    outputs.loss.backward()
    assert torch.isfinite(outputs.loss)
    for name, parameter in model.seg_head.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    side = {"llm_low_res": 4, "high_res": 8, "residual_refill": 8, "residual_amplifier": 16}[feature_path]
    assert outputs.pred_masks[3].shape == (1, side, side)
    assert model.config.mask_grid_size == side


def test_low_res_aux_loss_switch() -> None:
    batch = make_batch([SampleSpec()])
    losses = {}
    for use_aux in (True, False):
        model = tiny_model(use_low_res_aux_loss=use_aux).train()
        losses[use_aux] = model(**batch.model_inputs(), gt_masks=batch.gt_masks).mask_bce_loss
    assert losses[True] > losses[False] > 0


def test_gradient_checkpointing_gives_the_same_loss_and_gradients() -> None:
    batch = make_batch(MIXED)
    results = []
    for checkpointing in (False, True):
        model = tiny_model().train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
        outputs = model(**batch.model_inputs(), labels=labels_for(batch), gt_masks=batch.gt_masks)
        outputs.loss.backward()
        results.append((outputs.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss, grads), (checkpointed_loss, checkpointed_grads) = results
    torch.testing.assert_close(checkpointed_loss, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_bfloat16_forward_on_cpu_agrees_with_float32() -> None:
    model = tiny_model()
    batch = make_batch(MIXED)
    with torch.no_grad():
        reference = model(**batch.model_inputs()).pred_masks
        model.to(torch.bfloat16)
        inputs = {**batch.model_inputs(), "pixel_values": batch.pixel_values.to(torch.bfloat16)}
        outputs = model(**inputs)
    assert model.dtype == torch.bfloat16
    for low, high in zip(outputs.pred_masks, reference):
        assert low.dtype == torch.bfloat16 and low.shape == high.shape
        if high.numel():
            assert (low.float().sign() == high.sign()).float().mean() > 0.9
            assert (low.float() - high).abs().max() <= 0.1 * high.abs().max()


def test_generate_decodes_as_a_causal_model() -> None:
    model = tiny_model()
    batch = make_batch([SampleSpec(n_seg=0)])
    prompt = batch.input_ids[:, :-2]
    with torch.no_grad():
        generated = model.generate(
            input_ids=prompt, pixel_values=batch.pixel_values, max_new_tokens=3, do_sample=False, pad_token_id=0
        )
        first = model(input_ids=prompt, pixel_values=batch.pixel_values).logits[0, -1].argmax()
    assert generated.shape == (1, prompt.shape[1] + 3)
    assert generated[0, prompt.shape[1]] == first


def test_generate_from_embeddings_equals_generate_from_ids() -> None:
    model = tiny_model()
    batch = make_batch([SampleSpec(n_seg=0)])
    prompt = batch.input_ids[:, :-2]
    options = {"pixel_values": batch.pixel_values, "max_new_tokens": 3, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        from_ids = model.generate(input_ids=prompt, **options)
        from_embeddings = model.generate(inputs_embeds=model.get_input_embeddings()(prompt), **options)
    assert torch.equal(from_embeddings[0], from_ids[0, prompt.shape[1] :])


def test_save_and_load_round_trip(tmp_path) -> None:
    model = tiny_model(image_feature_path="residual_refill")
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as saved:
        # Stored under the model's own parameter names, not transformers' pre-v5 InternVL layout.
        assert set(saved.keys()) == set(model.state_dict())
    config = (tmp_path / "config.json").read_text()
    assert '"AutoModel": "modeling_self1e.Self1EForSegmentation"' in config
    for loader in (Self1EForSegmentation.from_pretrained, AutoModel.from_pretrained):
        loaded = loader(tmp_path)
        assert type(loaded) is Self1EForSegmentation
        assert loaded.config.image_feature_path == "residual_refill"
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name


def test_saved_folder_loads_with_remote_code_without_the_package(tmp_path) -> None:
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    batch = make_batch([SampleSpec(grid=(2, 1))])
    torch.save(batch.model_inputs(), tmp_path / "inputs.pt")
    with torch.no_grad():
        torch.save(model(**batch.model_inputs()).pred_masks[0], tmp_path / "expected.pt")
    script = f"""
        import torch
        from transformers import AutoModel

        model = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        with torch.no_grad():
            masks = model(**torch.load({str(tmp_path / "inputs.pt")!r})).pred_masks[0]
        torch.testing.assert_close(masks, torch.load({str(tmp_path / "expected.pt")!r}), rtol=1e-5, atol=1e-5)
        """
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


class TestBadInputs:
    def setup_method(self) -> None:
        self.model = tiny_model()

    def run(self, batch: Batch, **overrides):
        with torch.no_grad():
            return self.model(**{**batch.model_inputs(), **overrides})

    def test_tile_grids_that_do_not_cover_the_tiles(self) -> None:
        batch = make_batch([SampleSpec(grid=(2, 2))])
        with pytest.raises(ValueError, match="tile_grids describe 6 tiles but pixel_values has 4"):
            self.run(batch, tile_grids=[(2, 3)])

    def test_image_tokens_that_do_not_match_the_grid(self) -> None:
        batch = make_batch([SampleSpec(grid=(1, 2)), SampleSpec(grid=(1, 2))])
        with pytest.raises(ValueError, match="sample 0 has 32 image tokens"):
            self.run(batch, tile_grids=[(1, 1), (1, 3)])

    def test_several_tiles_without_tile_grids(self) -> None:
        batch = make_batch([SampleSpec(grid=(1, 2))])
        with pytest.raises(ValueError, match="tile_grids is required"):
            self.run(batch, tile_grids=None)

    def test_bad_grid_values(self) -> None:
        batch = make_batch([SampleSpec(grid=(1, 1))])
        with pytest.raises(ValueError, match="positive sides"):
            self.run(batch, tile_grids=[(1, 0)])

    def test_seg_sample_without_an_image(self) -> None:
        batch = make_batch([SampleSpec(grid=(1, 1)), SampleSpec(grid=None, n_seg=1)])
        with pytest.raises(ValueError, match="sample 1 has \\[SEG\\] tokens and 0 images"):
            self.run(batch)

    def test_seg_as_first_token(self) -> None:
        batch = make_batch([SampleSpec()])
        batch.input_ids[0, 0] = SEG
        with pytest.raises(ValueError, match="first token"):
            self.run(batch)

    def test_gt_masks_that_do_not_match_the_seg_tokens(self) -> None:
        batch = make_batch([SampleSpec(n_seg=2)])
        with pytest.raises(ValueError, match="sample 0 has 2 \\[SEG\\] tokens but 1 ground-truth masks"):
            self.run(batch, gt_masks=[torch.zeros(1, 8, 8)])
        with pytest.raises(ValueError, match="gt_masks has 2 entries for a batch of 1"):
            self.run(batch, gt_masks=[torch.zeros(2, 8, 8), None])
        with pytest.raises(ValueError, match="must be \\(num_masks, height, width\\)"):
            self.run(batch, gt_masks=[torch.zeros(2, 1, 8, 8)])

    def test_gt_masks_for_a_sample_without_seg(self) -> None:
        batch = make_batch([SampleSpec(grid=None, n_seg=0)])
        assert self.run(batch, gt_masks=[None]).mask_bce_loss == 0
        with pytest.raises(ValueError, match="sample 0 has 0 \\[SEG\\] tokens but 1 ground-truth masks"):
            self.run(batch, gt_masks=[torch.zeros(1, 8, 8)])

    def test_attention_mask_of_the_wrong_rank(self) -> None:
        batch = make_batch([SampleSpec()])
        with pytest.raises(ValueError, match="attention_mask must be 2D or 4D"):
            self.run(batch, attention_mask=batch.attention_mask[:, None])

    def test_ids_and_embeddings_together(self) -> None:
        batch = make_batch([SampleSpec()])
        with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
            self.run(batch, inputs_embeds=torch.zeros(1, batch.input_ids.shape[1], 64))

    def test_embeddings_with_an_image_are_refused_before_the_vision_tower_runs(self) -> None:
        batch = make_batch([SampleSpec()])
        calls = []
        hook = self.model.model.vision_tower.register_forward_hook(lambda *args: calls.append(args))
        embeddings = self.model.get_input_embeddings()(batch.input_ids)
        try:
            with pytest.raises(ValueError, match="inputs_embeds cannot be used with an image .* pass input_ids"):
                self.run(batch, input_ids=None, inputs_embeds=embeddings)
            with pytest.raises(ValueError, match="inputs_embeds cannot be used with .* gt_masks"):
                without_image = {"pixel_values": None, "gt_masks": [torch.zeros(1, 8, 8)]}
                self.run(batch, input_ids=None, inputs_embeds=embeddings, **without_image)
        finally:
            hook.remove()
        assert calls == []

    def test_embeddings_of_text_give_the_logits_of_its_ids(self) -> None:
        batch = make_batch([SampleSpec(grid=None, n_seg=0)])
        embeddings = self.model.get_input_embeddings()(batch.input_ids)
        from_ids = self.run(batch)
        from_embeddings = self.run(batch, input_ids=None, inputs_embeds=embeddings)
        torch.testing.assert_close(from_embeddings.logits, from_ids.logits)

    def test_image_tokens_without_an_image(self) -> None:
        batch = make_batch([SampleSpec(grid=(1, 1))])
        with pytest.raises(ValueError, match="input_ids hold 16 image tokens but no image was given"):
            self.run(batch, pixel_values=None)

    def test_invalid_config_values(self) -> None:
        # Configs validate like every transformers v5 config, through huggingface_hub's strict dataclasses.
        with pytest.raises(StrictDataclassError, match="image_feature_path"):
            tiny_config(image_feature_path="sam_decoder")
        with pytest.raises(StrictDataclassError, match="segmentation_attention"):
            tiny_config(segmentation_attention="sideways")
        with pytest.raises(StrictDataclassError, match="downsample_ratio must be 1/k"):
            tiny_config(downsample_ratio=0.3)


def shared_image_inputs(sample_images: list[int], grids: list[tuple[int, int]]) -> tuple[dict, dict]:
    """Samples asking about images given once (`prompt_to_image`), and the same samples each with its own copy of its
    image's tiles, as a plain batch lays them out."""
    batch = make_batch(
        [SampleSpec(grid=grids[image], n_seg=1 + sample % 2) for sample, image in enumerate(sample_images)]
    )
    generator = torch.Generator().manual_seed(7)
    images = [torch.randn(rows * cols, 3, 112, 112, generator=generator) for rows, cols in grids]
    text = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    once = {**text, "pixel_values": torch.cat(images), "tile_grids": grids, "prompt_to_image": sample_images}
    per_sample = {
        **text,
        "pixel_values": torch.cat([images[image] for image in sample_images]),
        "tile_grids": [grids[image] for image in sample_images],
    }
    return once, per_sample


@pytest.mark.parametrize("feature_path", IMAGE_FEATURE_PATHS)
@pytest.mark.parametrize("training", [False, True], ids=["banded-inference", "training-with-low-res"])
def test_images_given_once_give_the_masks_of_images_given_per_sample(feature_path: str, training: bool) -> None:
    # Prompts about one image share its vision features and the image-only part of the head; the masks, the losses
    # and the logits must be those of the same image repeated for every prompt.
    model = tiny_model(image_feature_path=feature_path)
    once, per_sample = shared_image_inputs([0, 1, 0, 0, 2, 1], [(2, 1), (1, 1), (1, 3)])
    gt_masks = None
    if training:
        generator = torch.Generator().manual_seed(1)
        gt_masks = [(torch.rand(1 + sample % 2, 24, 24, generator=generator) > 0.5).float() for sample in range(6)]
    with torch.no_grad():
        shared = model(**once, gt_masks=gt_masks)
        repeated = model(**per_sample, gt_masks=gt_masks)
    for shared_masks, repeated_masks in zip(shared.pred_masks, repeated.pred_masks):
        assert shared_masks.shape == repeated_masks.shape
        torch.testing.assert_close(shared_masks, repeated_masks, rtol=0, atol=0)  # identical, not just close
    torch.testing.assert_close(shared.logits, repeated.logits, rtol=0, atol=0)
    if training:
        torch.testing.assert_close(shared.loss, repeated.loss, rtol=0, atol=0)


def test_the_image_only_part_of_the_head_runs_once_per_image() -> None:
    model = tiny_model()
    once, _ = shared_image_inputs([0, 0, 0, 1], [(1, 2), (1, 1)])
    rows_seen = []
    hook = model.seg_head.vision_unshuffle_mlp.register_forward_hook(
        lambda module, args, output: rows_seen.append(args[0].shape[0])
    )
    try:
        with torch.no_grad():
            model(**once)
    finally:
        hook.remove()
    # f_PUS on F_V1 and on the bands of F_V1^HQ: one canvas per distinct image of each tile grid, never one per prompt.
    assert rows_seen and set(rows_seen) == {1}


def test_processor_post_processing_keys_are_accepted_and_unused() -> None:
    model = tiny_model()
    batch = make_batch([SampleSpec(grid=(2, 1)), SampleSpec()])
    extra = {
        "num_tiles": torch.tensor([2, 1]),
        "original_sizes": torch.tensor([[30, 20], [10, 10]]),
        "prompt_tile_indices": torch.tensor([2, 1, 0]),
    }
    with torch.no_grad():
        plain = model(**batch.model_inputs())
        with_extra = model(**batch.model_inputs(), **extra)
    for a, b in zip(plain.pred_masks, with_extra.pred_masks):
        assert torch.equal(a, b)


def test_past_key_values_is_the_deprecated_name_of_cache() -> None:
    model = tiny_model()
    batch = make_batch([SampleSpec(n_seg=0)])
    prompt, next_token = batch.input_ids[:, :-1], batch.input_ids[:, -1:]
    with torch.no_grad():
        prefix = model(input_ids=prompt, pixel_values=batch.pixel_values, use_cache=True)
        expected = model(input_ids=next_token, cache=copy.deepcopy(prefix.cache)).logits
        with pytest.warns(FutureWarning, match="past_key_values"):
            renamed = model(input_ids=next_token, past_key_values=copy.deepcopy(prefix.cache)).logits
    torch.testing.assert_close(renamed, expected)
    full = model(**batch.model_inputs()).logits[:, -1:]
    torch.testing.assert_close(expected, full, rtol=1e-4, atol=1e-4)


class TestBadImageInputs:
    def setup_method(self) -> None:
        self.model = tiny_model()
        self.once, _ = shared_image_inputs([0, 1, 0], [(2, 1), (1, 1)])

    def run(self, **overrides):
        with torch.no_grad():
            return self.model(**{**self.once, **overrides})

    def test_prompt_to_image_of_the_wrong_length(self) -> None:
        with pytest.raises(ValueError, match="prompt_to_image has 2 entries for a batch of 3 samples"):
            self.run(prompt_to_image=[0, 1])

    def test_prompt_to_image_naming_a_missing_image(self) -> None:
        with pytest.raises(ValueError, match="prompt_to_image\\[1\\] is 2, but there are 2 images"):
            self.run(prompt_to_image=[0, 2, 0])

    def test_prompt_to_image_naming_an_image_of_another_size(self) -> None:
        with pytest.raises(ValueError, match="sample 1 has 16 image tokens, but its image 0 has 32"):
            self.run(prompt_to_image=[0, 0, 0])

    def test_pixel_values_and_image_features_together(self) -> None:
        features = self.model.get_segmentation_image_features(self.once["pixel_values"])
        with pytest.raises(ValueError, match="as pixel_values or as their image_features, not both"):
            self.run(image_features=features)

    def test_get_image_features_is_transformers_standard(self) -> None:
        pixel_values = self.once["pixel_values"]
        with torch.no_grad():
            standard = self.model.get_image_features(pixel_values, return_dict=True)
            as_tuple = self.model.get_image_features(pixel_values, return_dict=False)
            own = self.model.get_segmentation_image_features(pixel_values)
            internvl = self.model.model.get_image_features(pixel_values=pixel_values, return_dict=True)
        torch.testing.assert_close(standard.pooler_output, internvl.pooler_output, rtol=0, atol=0)
        torch.testing.assert_close(own.projected_features, internvl.pooler_output, rtol=0, atol=0)
        assert isinstance(as_tuple, tuple)
        vit_side = self.model.config.vit_grid_size
        assert own.high_res_features.shape == (pixel_values.shape[0], vit_side**2, 64)
