"""SELF1E: InternVL3 that segments what a sentence describes with one `[SEG]` token and no mask decoder."""

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.models.internvl.modeling_internvl import InternVLModel
from transformers.utils import TRANSFORMERS_DYNAMIC_MODULE_NAME, ModelOutput, can_return_tuple

from .attention_mask import prepared_mask_function, segmentation_mask_function
from .configuration_self1e import Self1EConfig
from .image_layout import ImageLayout, plan_image_layout
from .mask_losses import mask_losses
from .pipeline_self1e import Self1EImageSegmentationPipeline  # noqa: F401  (saved beside the model as remote code)
from .predictor import SegmentationResult, Self1EPredictor
from .processing_self1e import Self1EProcessor
from .segmentation_head import Self1ESegmentationHead, stitch_tiles

# Canvas positions per band when inference computes the high-resolution masks band by band (bounds memory).
INFERENCE_BAND_POSITIONS = 1024

# transformers 5.24 renamed the cache argument and output field from `past_key_values` to `cache`.
CACHE_NAME = "cache" if "cache" in inspect.signature(InternVLModel.forward).parameters else "past_key_values"


@dataclass
class Self1EImageFeatures(ModelOutput):
    r"""
    Image features of a batch of tiles, computed once and reusable for several prompts on the same image.

    projected_features (`torch.FloatTensor` of shape `(num_tiles, tokens_per_tile, hidden_size)`):
        `F_V1`: pixel-shuffled ViT features through the projector; the language model's image input embeddings.
    high_res_features (`torch.FloatTensor` of shape `(num_tiles, vit_patches_per_tile, hidden_size)`):
        `F_V1^HQ`: the projector applied to every ViT patch feature replicated `f*f` times (paper Sec. 3.3).
    """

    projected_features: torch.FloatTensor | None = None
    high_res_features: torch.FloatTensor | None = None

    def select_tiles(self, tile_indices: torch.LongTensor) -> "Self1EImageFeatures":
        """The features of the given tiles, e.g. an image's tiles once for each prompt asked about it."""
        tile_indices = torch.as_tensor(tile_indices, dtype=torch.long, device=self.projected_features.device)
        return Self1EImageFeatures(self.projected_features[tile_indices], self.high_res_features[tile_indices])


@dataclass
class Self1ESegmentationOutput(ModelOutput):
    r"""
    Output of [`Self1EForSegmentation`].

    loss (`torch.FloatTensor` of shape `()`, *optional*):
        `text_loss_weight * text_loss + bce_loss_weight * mask_bce_loss + dice_loss_weight * mask_dice_loss`, over the
        terms whose targets were given (`labels`, `gt_masks`).
    text_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Next-token cross-entropy, returned when `labels` is given.
    mask_bce_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Sigmoid binary cross-entropy of the masks (plus the low-resolution auxiliary prediction), summed over the
        masks and divided by the batch size; returned when `gt_masks` is given.
    mask_dice_loss (`torch.FloatTensor` of shape `()`, *optional*):
        Dice loss of the masks, reduced like `mask_bce_loss`.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`):
        Language modeling logits.
    pred_masks (`list[torch.FloatTensor]`):
        One entry per sample: mask logits `(num_seg_tokens, height, width)` on the stitched canvas of the sample's
        image (threshold at 0; `height` is twice the ViT grid of all tiles with the default head). Samples without
        `[SEG]` get an empty `(0, height, width)` tensor (`(0, 0, 0)` without an image).
    past_key_values (`Cache`, *optional*):
        Cached keys and values of the language model (transformers < 5.24; from 5.24 a read-only alias of `cache`).
    cache (`Cache`, *optional*):
        The same, under the name transformers >= 5.24 uses (absent before 5.24).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Hidden states of the language model, when `output_hidden_states=True`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Attention weights of the language model, when `output_attentions=True`.
    image_hidden_states (`torch.FloatTensor`, *optional*):
        `F_V1`, the projected image features fed to the language model.
    """

    loss: torch.FloatTensor | None = None
    text_loss: torch.FloatTensor | None = None
    mask_bce_loss: torch.FloatTensor | None = None
    mask_dice_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pred_masks: list[torch.FloatTensor] | None = None
    # One field under this transformers' name: 5.24 outputs map the other name onto it (and warn when it is set).
    if CACHE_NAME == "cache":
        cache: Cache | None = None
    else:
        past_key_values: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


class Self1EPreTrainedModel(PreTrainedModel):
    config_class = Self1EConfig
    config: Self1EConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        # The vision tower and language model dispatch to their own `_init_weights`; what is left here is the
        # segmentation head and the LM head, plain linear layers initialised with the text model's range.
        super()._init_weights(module)


class Self1EForSegmentation(Self1EPreTrainedModel, GenerationMixin):
    r"""
    SELF1E (paper Sec. 3): transformers' [`InternVLModel`] (vision tower, pixel-shuffle projector, language model),
    a language modeling head for text, and [`Self1ESegmentationHead`], which turns the hidden state that predicts each
    `[SEG]` token into a mask over the image by a scaled dot product with high-resolution image features.

    Samples containing `[SEG]` use the segmentation attention mask (`config.segmentation_attention`); samples without
    it (plain VQA) and `generate()` stay causal.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # The loss is a mean over each micro-batch (tokens for text, samples for masks, as the reference training does),
    # so `Trainer` must average gradient-accumulation steps itself rather than pass `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, config: Self1EConfig):
        super().__init__(config)
        # The class name would select transformers' DETR-style segmentation loss; the text loss is causal LM's.
        self.loss_type = "ForCausalLM"
        self.model = InternVLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.seg_head = Self1ESegmentationHead(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def save_pretrained(self, save_directory, *args, save_original_format: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained`, storing weights under this model's own parameter names by default.
        SELF1E has no older layout to revert to; transformers' default would rename the InternVL part to its pre-v5
        names, which `Trainer` does not rename back when it resumes from a checkpoint."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    def predictor(self, processor: Self1EProcessor | None = None, **kwargs) -> Self1EPredictor:
        """A [`Self1EPredictor`] for this model. Without `processor`, the one saved beside the weights is loaded
        (once) from the folder the model came from."""
        if processor is None:
            processor = getattr(self, "_processor", None)
        if processor is None:
            if not self.name_or_path:
                raise ValueError("this model was not loaded from a folder: pass processor=Self1EProcessor(...)")
            # This class is remote code only if the caller loaded the folder with `trust_remote_code=True`; the
            # processor's tokenizer resolves the same folder's config, which must not ask that question again.
            loaded_as_remote_code = type(self).__module__.startswith(f"{TRANSFORMERS_DYNAMIC_MODULE_NAME}.")
            processor = Self1EProcessor.from_pretrained(self.name_or_path, trust_remote_code=loaded_as_remote_code)
        self._processor = processor
        return Self1EPredictor(self, processor, **kwargs)

    def segment(self, images, prompts=None, *, processor: Self1EProcessor | None = None, **kwargs):
        """Masks at each image's own size for `prompts`, or a semantic map for `classes=`; see
        [`Self1EPredictor.segment`]. The vision tower runs once per image, prompts are batched."""
        return self.predictor(processor).segment(images, prompts, **kwargs)

    def chat(self, image, question: str, *, processor: Self1EProcessor | None = None, **kwargs) -> str:
        """A free-form answer about `image` (plain causal decoding); see [`Self1EPredictor.chat`]."""
        return self.predictor(processor).chat(image, question, **kwargs)

    def segment_answer(
        self, image, question: str, answer: str, *, processor: Self1EProcessor | None = None, **kwargs
    ) -> SegmentationResult:
        """One mask per `[SEG]` of an answer, e.g. one returned by [`~Self1EForSegmentation.chat`]."""
        return self.predictor(processor).segment_answer(image, question, answer, **kwargs)

    def get_image_features(self, pixel_values: torch.FloatTensor) -> Self1EImageFeatures:
        """Runs the vision tower once and returns both `F_V1` (for the LLM) and `F_V1^HQ` (for the mask)."""
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"SELF1E needs a single vision_feature_layer, got {layer!r}")
        vision_outputs = self.model.get_image_features(
            pixel_values=pixel_values, return_dict=True, output_hidden_states=layer != -1
        )
        patch_features = vision_outputs.last_hidden_state if layer == -1 else vision_outputs.hidden_states[layer]
        if self.config.vision_feature_select_strategy == "default":
            patch_features = patch_features[:, 1:]
        high_res = self._project_replicated(patch_features)
        return Self1EImageFeatures(projected_features=vision_outputs.pooler_output, high_res_features=high_res)

    def _project_replicated(self, patch_features: torch.FloatTensor) -> torch.FloatTensor:
        """Self-replication (Sec. 3.3): the projector applied to each ViT patch feature repeated `f*f` times, which
        keeps the ViT grid. A repeated vector has the mean and variance of the original, so the projector's LayerNorm
        and first linear layer fold into one layer over the original channels, `f*f` times cheaper and without
        materialising the repeated features."""
        projector = self.model.multi_modal_projector
        norm, first = projector.layer_norm, projector.linear_1
        copies = self.config.shuffle_factor**2
        channels = patch_features.shape[-1]
        normalized = nn.functional.layer_norm(patch_features, (channels,), eps=norm.eps)
        blocks = first.weight.view(first.out_features, copies, channels) * norm.weight.view(copies, channels)
        hidden = nn.functional.linear(normalized, blocks.sum(1), first.bias + first.weight @ norm.bias)
        return projector.linear_2(projector.act(hidden))

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        cache: Cache | None = None,
        tile_grids: torch.LongTensor | list[tuple[int, int]] | None = None,
        has_thumbnail: torch.BoolTensor | list[bool] | None = None,
        prompt_to_image: torch.LongTensor | list[int] | None = None,
        sample_tile_indices: torch.LongTensor | list[int] | None = None,
        gt_masks: list[torch.Tensor] | None = None,
        image_features: Self1EImageFeatures | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_tiles: torch.LongTensor | None = None,
        original_sizes: torch.LongTensor | None = None,
        **kwargs,
    ) -> Self1ESegmentationOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, tile_size, tile_size)`, *optional*):
            Tiles of all images of the batch, in sample order, each image's tiles in raster order (row by row).
        attention_mask (`torch.Tensor`, *optional*):
            `(batch, length)` padding mask (1 = real token), from which the segmentation attention mask is built, or
            a prepared `(batch, 1, length, length)` mask (boolean, or additive float with 0 = attend), used as given.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets; -100 is ignored.
        tile_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            `(rows, cols)` tile grid of each image, in the order the images appear in the batch. May be omitted when
            every image is a single tile.
        has_thumbnail (`torch.BoolTensor` of shape `(num_images,)`, *optional*):
            Whether each image's grid tiles are followed by a thumbnail tile (seen by the LLM, not part of the mask).
        prompt_to_image (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            With `sample_tile_indices`: the image each sample asks about, when several samples share an image and
            `pixel_values`, `tile_grids` and `has_thumbnail` hold each image once (as
            `Self1EProcessor.prepare_segmentation_inputs` returns them). The vision tower then runs once per image.
        sample_tile_indices (`torch.LongTensor`, *optional*):
            The rows of `pixel_values` that make up each sample's tiles, concatenated in sample order.
        gt_masks (`list[torch.Tensor]`, *optional*):
            Per sample, `(num_seg_tokens, height, width)` ground-truth masks (any size) for the mask losses; samples
            without `[SEG]` take an empty tensor or `None`.
        cache (`Cache`, *optional*):
            The language model's cache under its transformers >= 5.24 name; same as `past_key_values`. Passing a cache
            (as `generate()` does) decodes text causally and predicts no masks.
        image_features (`Self1EImageFeatures`, *optional*):
            Precomputed [`~Self1EForSegmentation.get_image_features`] of `pixel_values`, to run the vision tower once
            for several prompts on one image.
        num_tiles, original_sizes (`torch.LongTensor`, *optional*):
            Returned by the processor for post-processing; the forward pass does not need them.

        `inputs_embeds` replaces `input_ids` only where no token positions are needed: text without an image, or
        decoding with a cache (as `generate()` does). With an image or `gt_masks` and no cache, the segmentation
        attention mask and the masks are read from the image and `[SEG]` tokens of `input_ids`, which are required.
        """
        cache = cache if cache is not None else past_key_values
        has_image = pixel_values is not None or image_features is not None
        _check_token_inputs(self.config, input_ids, inputs_embeds, has_image, gt_masks, cache)
        if pixel_values is not None and image_features is None:
            image_features = self.get_image_features(pixel_values)
        if sample_tile_indices is not None:
            if prompt_to_image is None or image_features is None:
                raise ValueError("sample_tile_indices needs prompt_to_image and pixel_values (or image_features)")
            image_features = image_features.select_tiles(sample_tile_indices)
            tile_grids, has_thumbnail = _per_sample(prompt_to_image, tile_grids, has_thumbnail)
        # generate() passes a cache: it decodes text like the causal chat model and predicts no masks.
        segmenting = cache is None and input_ids is not None
        padding_mask = attention_mask if _is_2d(attention_mask) else None
        if segmenting:
            attention_mask = self._language_model_attention_mask(input_ids, attention_mask, position_ids)

        mm_encoder_outputs = None
        if image_features is not None:
            mm_encoder_outputs = {"image": BaseModelOutputWithPooling(pooler_output=image_features.projected_features)}
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=mm_encoder_outputs,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))

        pred_masks = low_res_masks = None
        if segmenting:
            layout = plan_image_layout(
                input_ids,
                attention_mask_2d=padding_mask,
                image_token_id=self.config.image_token_id,
                seg_token_id=self.config.seg_token_id,
                tokens_per_tile=self.config.image_tokens_per_tile,
                num_tiles=0 if image_features is None else image_features.projected_features.shape[0],
                tile_grids=tile_grids,
                has_thumbnail=has_thumbnail,
            )
            with_low_res = gt_masks is not None and self.config.use_low_res_aux_loss
            pred_masks, low_res_masks = self._predict_masks(
                input_ids, hidden_states, image_features, layout, with_low_res
            )

        text_loss = mask_bce_loss = mask_dice_loss = loss = None
        if labels is not None:
            text_loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
            loss = self.config.text_loss_weight * text_loss
        if gt_masks is not None:
            if pred_masks is None:
                raise ValueError(
                    "gt_masks were given, but no masks were predicted: pass pixel_values and [SEG] tokens"
                )
            mask_bce_loss, mask_dice_loss = self._mask_losses(pred_masks, low_res_masks, gt_masks)
            mask_loss = self.config.bce_loss_weight * mask_bce_loss + self.config.dice_loss_weight * mask_dice_loss
            loss = mask_loss if loss is None else loss + mask_loss

        return Self1ESegmentationOutput(
            loss=loss,
            text_loss=text_loss,
            mask_bce_loss=mask_bce_loss,
            mask_dice_loss=mask_dice_loss,
            logits=logits,
            pred_masks=pred_masks,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=None if image_features is None else image_features.projected_features,
        )

    def _language_model_attention_mask(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, position_ids: torch.LongTensor | None
    ) -> torch.Tensor | dict | None:
        """The segmentation attention mask, rendered by transformers for the language model's attention backend."""
        if attention_mask is not None and attention_mask.ndim == 4:
            # A prepared mask is honoured exactly: (causal | M) & M == M.
            prepared = prepared_mask_function(attention_mask.to(input_ids.device))
            or_function = and_function = prepared
            attention_mask = None
        elif attention_mask is not None and attention_mask.ndim != 2:
            raise ValueError(f"attention_mask must be 2D or 4D, got shape {tuple(attention_mask.shape)}")
        else:
            or_function = segmentation_mask_function(
                input_ids, self.config.image_token_id, self.config.seg_token_id, self.config.segmentation_attention
            )
            and_function = None
            if or_function is None:
                return attention_mask
        text_config = self.config.text_config
        # Positional (config, inputs_embeds, attention_mask, cache): the cache argument's name depends on the version.
        mask_arguments = (
            text_config,
            torch.empty(input_ids.shape + (0,), dtype=self.dtype, device=input_ids.device),
            attention_mask,
            None,
        )
        mask_kwargs = {
            "position_ids": position_ids,
            "or_mask_function": or_function,
            "and_mask_function": and_function,
        }
        mask_mapping = {"full_attention": create_causal_mask(*mask_arguments, **mask_kwargs)}
        if "sliding_attention" in (getattr(text_config, "layer_types", None) or ()):
            mask_mapping["sliding_attention"] = create_sliding_window_causal_mask(*mask_arguments, **mask_kwargs)
        return mask_mapping

    def _predict_masks(
        self,
        input_ids: torch.LongTensor,
        hidden_states: torch.FloatTensor,
        image_features: Self1EImageFeatures | None,
        layout: ImageLayout,
        with_low_res: bool,
    ) -> tuple[list[torch.FloatTensor], list[torch.FloatTensor | None]]:
        """Mask logits of every `[SEG]` token, per sample, and with `with_low_res` the auxiliary low-resolution
        logits of the training loss."""
        batch_size = input_ids.shape[0]
        tokens_per_tile = self.config.image_tokens_per_tile
        hidden_size = hidden_states.shape[-1]
        pred_masks: list[torch.FloatTensor | None] = [None] * batch_size
        low_res_masks: list[torch.FloatTensor | None] = [None] * batch_size
        groups = layout.seg_samples_by_grid()
        if groups:
            # Hidden states at the image tokens follow the tiles' order, as the image embeddings were scattered so.
            is_image = input_ids == self.config.image_token_id
            llm_image_features = hidden_states[is_image].view(-1, tokens_per_tile, hidden_size)
            # The state at the position before each [SEG] is the one that predicts it.
            seg_embeddings = self.seg_head.embed_seg(hidden_states[layout.seg_state_positions])
            seg_per_sample = seg_embeddings.split(layout.seg_counts)
        # One batched pass per distinct tile grid, not one per sample.
        for (rows, cols), group in groups.items():
            tiles = layout.tile_indices(group, device=hidden_states.device)
            n_images = len(group)

            def canvas(per_tile: torch.Tensor) -> torch.Tensor:
                return stitch_tiles(per_tile[tiles].view(n_images, rows * cols, -1, hidden_size), rows, cols)

            features = (
                canvas(llm_image_features),
                canvas(image_features.projected_features),
                canvas(image_features.high_res_features),
            )
            seg = pad_sequence([seg_per_sample[sample] for sample in group], batch_first=True)
            low_res = None
            if not with_low_res and self.config.image_feature_path == "residual_amplifier":
                # Without the auxiliary loss: the high-resolution canvas in bands of rows, never whole with its d
                # channels (same logits, bounded memory).
                vit_columns = features[2].shape[2]
                rows_per_band = max(1, INFERENCE_BAND_POSITIONS // (vit_columns * self.config.shuffle_factor**2))
                logits = self.seg_head.mask_logits_by_rows(*features, seg, rows_per_band)
            else:
                image_hidden, low_res_embeddings = self.seg_head.image_hidden_states(*features)
                logits = self.seg_head.mask_logits(image_hidden, seg)
                if with_low_res and low_res_embeddings is not None:
                    low_res = self.seg_head.dot_logits(low_res_embeddings, seg)
            for position, sample in enumerate(group):
                count = layout.seg_counts[sample]
                pred_masks[sample] = logits[position, :count]
                if low_res is not None:
                    low_res_masks[sample] = low_res[position, :count]

        canvas_size = self._canvas_size
        for sample in range(batch_size):
            if pred_masks[sample] is None:
                grid = layout.sample_grid(sample)
                size = (0, 0) if grid is None else canvas_size(*grid)
                pred_masks[sample] = hidden_states.new_zeros((0, *size))
        return pred_masks, low_res_masks

    def _canvas_size(self, rows: int, cols: int) -> tuple[int, int]:
        side = {
            "llm_low_res": self.config.llm_grid_size,
            "high_res": self.config.vit_grid_size,
            "residual_refill": self.config.vit_grid_size,
            "residual_amplifier": self.config.vit_grid_size * self.config.shuffle_factor,
        }[self.config.image_feature_path]
        return rows * side, cols * side

    def _mask_losses(
        self,
        pred_masks: list[torch.FloatTensor],
        low_res_masks: list[torch.FloatTensor | None],
        gt_masks: list[torch.Tensor | None],
    ) -> tuple[torch.FloatTensor, torch.FloatTensor]:
        if len(gt_masks) != len(pred_masks):
            raise ValueError(f"gt_masks has {len(gt_masks)} entries for a batch of {len(pred_masks)} samples")
        # Ground-truth sizes may differ between samples: samples are grouped by prediction and ground-truth size, and
        # each group is scored in one pass (per-sample passes cost a launch per kernel per sample on a GPU).
        groups: dict[tuple, list[int]] = {}
        for sample, (pred, gt) in enumerate(zip(pred_masks, gt_masks)):
            n_masks = 0 if gt is None else gt.shape[0]
            if n_masks != pred.shape[0]:
                raise ValueError(
                    f"sample {sample} has {pred.shape[0]} [SEG] tokens but {n_masks} ground-truth masks in gt_masks"
                )
            if n_masks == 0:
                continue
            if gt.ndim != 3:
                raise ValueError(f"gt_masks[{sample}] must be (num_masks, height, width), got {tuple(gt.shape)}")
            groups.setdefault((tuple(pred.shape[1:]), tuple(gt.shape[1:])), []).append(sample)

        bce = dice = pred_masks[0].new_zeros((), dtype=torch.float32)
        for members in groups.values():
            gt = torch.cat([gt_masks[sample] for sample in members]).to(pred_masks[members[0]].device).float()
            for head_masks in (pred_masks, low_res_masks):
                if head_masks[members[0]] is not None:
                    logits = torch.cat([head_masks[sample] for sample in members]).float()
                    group_bce, group_dice = mask_losses(logits, gt, self.config.gt_mask_short_side)
                    bce = bce + group_bce
                    dice = dice + group_dice
        batch_size = len(pred_masks)
        return bce / batch_size, dice / batch_size


def _check_token_inputs(
    config: Self1EConfig,
    input_ids: torch.LongTensor | None,
    inputs_embeds: torch.FloatTensor | None,
    has_image: bool,
    gt_masks: list | None,
    cache: Cache | None,
) -> None:
    """Refuses, before any compute, token inputs a segmentation forward pass would misread."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if cache is not None:
        return  # decoding text causally, as generate() does: no image or [SEG] positions are needed
    if inputs_embeds is not None and (has_image or gt_masks is not None):
        raise ValueError(
            "inputs_embeds cannot be used with an image (pixel_values or image_features) or gt_masks without a cache: "
            "the segmentation attention mask and the masks need the positions of the image and [SEG] tokens, so "
            "pass input_ids"
        )
    if input_ids is not None and not has_image:
        image_tokens = int((input_ids == config.image_token_id).sum())
        if image_tokens:
            raise ValueError(
                f"input_ids hold {image_tokens} image tokens but no image was given: pass the pixel_values (or "
                "image_features) of the images they stand for"
            )


def _per_sample(prompt_to_image, tile_grids, has_thumbnail) -> tuple[list | None, list | None]:
    """Per-image `tile_grids` / `has_thumbnail` repeated for the samples that ask about each image."""
    images = torch.as_tensor(prompt_to_image).tolist()
    grids = None if tile_grids is None else [tuple(torch.as_tensor(tile_grids)[image].tolist()) for image in images]
    thumbnails = None if has_thumbnail is None else [bool(has_thumbnail[image]) for image in images]
    return grids, thumbnails


def _is_2d(attention_mask: torch.Tensor | dict | None) -> bool:
    return isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2


__all__ = ["Self1EForSegmentation", "Self1EPreTrainedModel", "Self1ESegmentationOutput", "Self1EImageFeatures"]
