"""SELF1E: InternVL3 that segments what a sentence describes with one `[SEG]` token and no mask decoder."""

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
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .attention_mask import prepared_mask_function, segmentation_mask_function
from .configuration_self1e import Self1EConfig
from .image_layout import ImageLayout, plan_image_layout
from .mask_losses import mask_losses
from .pipeline_self1e import Self1EImageSegmentationPipeline  # noqa: F401  (saved beside the model as remote code)
from .predictor import SegmentationResult, Self1EPredictor
from .processing_self1e import Self1EProcessor
from .segmentation_head import Self1ESegmentationHead, is_dense_weight, stitch_tiles

# Canvas positions per band when inference computes the high-resolution masks band by band (bounds memory).
INFERENCE_BAND_POSITIONS = 1024

# What `Self1EProcessor` returns beside the model inputs, for post-processing; `forward` accepts and drops them, so
# that `model(**processor_outputs)` works.
PROCESSOR_ONLY_KEYS = ("num_tiles", "original_sizes", "prompt_tile_indices")


@dataclass
class Self1EImageFeatures(ModelOutput):
    r"""
    Image features of a batch of tiles, computed once by
    [`~Self1EForSegmentation.get_segmentation_image_features`] and reusable for several prompts on the same image.

    projected_features (`torch.FloatTensor` of shape `(num_tiles, tokens_per_tile, hidden_size)`):
        `F_V1`: pixel-shuffled ViT features through the projector; the language model's image input embeddings.
    high_res_features (`torch.FloatTensor` of shape `(num_tiles, vit_patches_per_tile, hidden_size)`):
        `F_V1^HQ`: the projector applied to every ViT patch feature replicated `f*f` times (paper Sec. 3.3).
    """

    projected_features: torch.FloatTensor | None = None
    high_res_features: torch.FloatTensor | None = None


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
        image (threshold at 0; `height` is `rows * config.mask_grid_size`). Samples without `[SEG]` get an empty
        `(0, height, width)` tensor (`(0, 0, 0)` without an image). `None` when decoding with a cache.
    cache (`Cache`, *optional*):
        Cached keys and values of the language model (`past_key_values` reads it too, with a deprecation warning).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*):
        Hidden states of the language model, when `output_hidden_states=True`.
    attentions (`tuple(torch.FloatTensor)`, *optional*):
        Attention weights of the language model, when `output_attentions=True`.
    image_outputs (`BaseModelOutputWithPooling`, *optional*):
        Output of the vision tower for `pixel_values`, with `F_V1` as `pooler_output` (only that one for
        precomputed `image_features`). `None` without an image.
    """

    loss: torch.FloatTensor | None = None
    text_loss: torch.FloatTensor | None = None
    mask_bce_loss: torch.FloatTensor | None = None
    mask_dice_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    pred_masks: list[torch.FloatTensor] | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_outputs: BaseModelOutputWithPooling | None = None

    @property
    def image_hidden_states(self) -> torch.FloatTensor | None:
        """`F_V1`, the projected image features fed to the language model (`image_outputs.pooler_output`)."""
        return None if self.image_outputs is None else self.image_outputs.pooler_output


class Self1EPreTrainedModel(PreTrainedModel):
    """Loading, saving and attention-backend settings shared by the SELF1E models."""

    config: Self1EConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["cache"]
    # `device_map="auto"` keeps each of these on one device, besides InternVL's vision and decoder layers (the vision
    # embeddings read their own parameters directly, which offloading only supports for a whole module).
    _no_split_modules = ["Self1ESegmentationHead", "InternVLMultiModalProjector", "InternVLVisionEmbeddings"]
    # Best kept in full precision when quantizing (pass them as torchao's `modules_to_not_convert` or bitsandbytes'
    # `llm_int8_skip_modules`): small, and read directly (the [SEG] read-out, the folded replicated projection) rather
    # than through their layers' forward, which quantized layers need (slower, see `read_back`); the LM head is tied to
    # the input embeddings.
    modules_to_not_quantize = ("seg_head", "model.multi_modal_projector", "lm_head")
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


class Self1EForSegmentation(Self1EPreTrainedModel, GenerationMixin):
    r"""
    SELF1E (paper Sec. 3): transformers' [`InternVLModel`] (vision tower, pixel-shuffle projector, language model),
    a language modeling head for text, and [`Self1ESegmentationHead`], which turns the hidden state that predicts each
    `[SEG]` token into a mask over the image by a scaled dot product with high-resolution image features.

    Samples containing `[SEG]` use the segmentation attention mask (`config.segmentation_attention`); samples without
    it (plain VQA) and `generate()` stay causal.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # Tensor parallelism (`tp_plan="auto"`): the language model's own plan, plus the LM head, as InternVL's.
    _tp_plan = {"lm_head": "colwise_gather_output"}
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
        """[`~PreTrainedModel.save_pretrained`], storing the weights under this model's own parameter names unless
        `save_original_format=True`: `Trainer` checkpoints call it without the flag, and transformers' default would
        rename the InternVL part to its pre-v5 names, which `Trainer` does not rename back when it resumes."""
        return super().save_pretrained(save_directory, *args, save_original_format=save_original_format, **kwargs)

    def predictor(self, processor: Self1EProcessor | None = None, **kwargs) -> Self1EPredictor:
        r"""
        A [`Self1EPredictor`] for this model, which holds the processor: keep it for repeated calls.

        Args:
            processor ([`Self1EProcessor`], *optional*):
                The model's processor; without it, the processor saved beside the weights is loaded from the folder
                or Hub repository the model came from.
            kwargs:
                `max_batch_tokens` and `max_postprocess_bytes` of [`Self1EPredictor`].
        """
        return Self1EPredictor.from_model(self, processor, **kwargs)

    def segment(
        self, images, prompts=None, *, processor: Self1EProcessor | None = None, **kwargs
    ) -> SegmentationResult | list[SegmentationResult]:
        r"""
        Segments what `prompts` describe, or every pixel into `classes=`, at each image's own size: the entry point
        to [`Self1EPredictor.segment`], which runs the vision tower once per image and batches the prompts.

        Args:
            images (`ImageInput` or `list[ImageInput]`):
                A PIL image, array, tensor or path, or a list of them.
            prompts (`str`, `list[str]`, or a list of them per image, *optional*):
                What to segment; or `classes=` instead.
            processor ([`Self1EProcessor`], *optional*):
                The model's processor. Without it, the one saved beside the weights is loaded on every call (about a
                second for a full-size tokenizer): for repeated calls, keep `predictor = model.predictor()`.
            kwargs:
                `classes`, `threshold`, `return_probabilities`, `max_tiles`, ... of [`Self1EPredictor.segment`].

        Returns:
            [`SegmentationResult`] for one image, a list of them for a list of images.

        Example:

        ```python
        >>> from transformers import AutoModel

        >>> model = AutoModel.from_pretrained("org/self1e-8b", trust_remote_code=True)
        >>> result = model.segment("street.jpg", ["the red car", "the person on the left"])
        >>> result.masks.shape  # one boolean mask per prompt, at the image's own size
        torch.Size([2, 480, 640])
        >>> predictor = model.predictor()  # loads the processor once, for many calls
        >>> predictor.segment("street.jpg", classes=["sky", "road", "car"]).label_map.shape  # -1: background
        torch.Size([480, 640])
        ```
        """
        return self.predictor(processor).segment(images, prompts, **kwargs)

    def chat(self, image, question: str, *, processor: Self1EProcessor | None = None, **kwargs) -> str:
        """A free-form answer about `image` (plain causal decoding): see [`Self1EPredictor.chat`] and, for
        `processor`, [`~Self1EForSegmentation.segment`]."""
        return self.predictor(processor).chat(image, question, **kwargs)

    def segment_answer(
        self, image, question: str, answer: str, *, processor: Self1EProcessor | None = None, **kwargs
    ) -> SegmentationResult:
        """One mask per `[SEG]` of an answer, e.g. one returned by [`~Self1EForSegmentation.chat`]: see
        [`Self1EPredictor.segment_answer`] and, for `processor`, [`~Self1EForSegmentation.segment`]."""
        return self.predictor(processor).segment_answer(image, question, answer, **kwargs)

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        r"""
        The vision tower's output for `pixel_values`, with the projected features `F_V1` as `pooler_output`, as
        [`InternVLModel.get_image_features`] returns it. SELF1E's mask head also needs `F_V1^HQ`:
        [`~Self1EForSegmentation.get_segmentation_image_features`] returns both.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, tile_size, tile_size)`):
                Tiles of the images.
            vision_feature_layer (`int`, *optional*):
                The vision tower layer whose features are projected; defaults to `config.vision_feature_layer`.
            vision_feature_select_strategy (`str`, *optional*):
                `"default"` drops the class token; defaults to `config.vision_feature_select_strategy`.
        """
        return self.model.get_image_features(
            pixel_values=pixel_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            **kwargs,
        )

    def get_segmentation_image_features(self, pixel_values: torch.FloatTensor) -> Self1EImageFeatures:
        r"""
        Runs the vision tower once and returns both image features of SELF1E: `F_V1` for the language model and
        `F_V1^HQ` for the masks. Pass them to `forward` as `image_features` to reuse them for several batches of
        prompts on the same images.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, tile_size, tile_size)`):
                Tiles of the images.
        """
        return self._encode_images(pixel_values)[1]

    def _encode_images(
        self, pixel_values: torch.FloatTensor
    ) -> tuple[BaseModelOutputWithPooling, Self1EImageFeatures]:
        """The vision tower's output and both image features, `F_V1` and `F_V1^HQ` (paper Sec. 3.2-3.3)."""
        layer = self.config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"SELF1E needs a single vision_feature_layer, got {layer!r}")
        vision_outputs = self.get_image_features(pixel_values, return_dict=True, output_hidden_states=layer != -1)
        patch_features = vision_outputs.last_hidden_state if layer == -1 else vision_outputs.hidden_states[layer]
        if self.config.vision_feature_select_strategy == "default":
            patch_features = patch_features[:, 1:]
        features = Self1EImageFeatures(vision_outputs.pooler_output, self._project_replicated(patch_features))
        return vision_outputs, features

    def _project_replicated(self, patch_features: torch.FloatTensor) -> torch.FloatTensor:
        """Self-replication (Sec. 3.3): the projector applied to each ViT patch feature repeated `f*f` times, which
        keeps the ViT grid. A repeated vector has the mean and variance of the original, so the projector's LayerNorm
        and first linear layer fold into one layer over the original channels, `f*f` times cheaper and without
        materialising the repeated features."""
        projector = self.model.multi_modal_projector
        norm, first = projector.layer_norm, projector.linear_1
        copies = self.config.shuffle_factor**2
        if not (is_dense_weight(first.weight) and is_dense_weight(norm.weight)):
            # Offloaded by accelerate (the weights exist only inside each layer's forward) or quantized: apply the
            # projector to the replicated features as defined.
            return projector(torch.cat([patch_features] * copies, dim=-1))
        channels = patch_features.shape[-1]
        normalized = nn.functional.layer_norm(patch_features, (channels,), eps=norm.eps)
        blocks = first.weight.view(first.out_features, copies, channels) * norm.weight.view(copies, channels)
        hidden = nn.functional.linear(normalized, blocks.sum(1), first.bias + first.weight @ norm.bias)
        return projector.linear_2(projector.act(hidden))

    @can_return_tuple
    @deprecate_kwarg("past_key_values", version="5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        gt_masks: list[torch.Tensor | None] | None = None,
        image_features: Self1EImageFeatures | None = None,
        tile_grids: torch.LongTensor | list[tuple[int, int]] | None = None,
        has_thumbnail: torch.BoolTensor | list[bool] | None = None,
        prompt_to_image: torch.LongTensor | list[int] | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> Self1ESegmentationOutput:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, 3, tile_size, tile_size)`, *optional*):
            The tiles of every image, images in order, each image's tiles in raster order (row by row) followed by its
            thumbnail, if any. Without `prompt_to_image`, each sample's image tokens stand for the next images.
        attention_mask (`torch.Tensor`, *optional*):
            `(batch, length)` padding mask (1 = real token), from which the segmentation attention mask is built, or
            a prepared `(batch, 1, length, length)` mask (boolean, or additive float with 0 = attend), used as given.
        cache (`Cache`, *optional*):
            The language model's cache (`past_key_values=` is accepted with a deprecation warning). Passing a cache
            (as `generate()` does) decodes text causally and predicts no masks.
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets; -100 is ignored.
        gt_masks (`list[torch.Tensor]`, *optional*):
            Per sample, `(num_seg_tokens, height, width)` ground-truth masks (any size) for the mask losses; samples
            without `[SEG]` take an empty tensor or `None`.
        image_features ([`Self1EImageFeatures`], *optional*):
            The images as [`~Self1EForSegmentation.get_segmentation_image_features`] of their `pixel_values`, laid
            out like them, to run the vision tower once for several batches of prompts. Pass this or `pixel_values`.
        tile_grids (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            `(rows, cols)` tile grid of each image. May be omitted when every image is a single tile.
        has_thumbnail (`torch.BoolTensor` of shape `(num_images,)`, *optional*):
            Whether each image's tiles end with a thumbnail (read by the language model, not part of the mask).
        prompt_to_image (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            The image each sample shows, when several samples ask about one image given once (as
            [`Self1EProcessor.prepare_segmentation_inputs`] returns them): the vision tower and the part of the mask
            head that depends on the image alone then run once per image.
        kwargs:
            Passed to the language model (e.g. `output_hidden_states`, `output_attentions`); the processor's
            post-processing keys `num_tiles`, `original_sizes` and `prompt_tile_indices` are accepted and unused.

        `inputs_embeds` replaces `input_ids` only where no token positions are needed: text without an image, or
        decoding with a cache (as `generate()` does). With an image or `gt_masks` and no cache, the segmentation
        attention mask and the masks are read from the image and `[SEG]` tokens of `input_ids`, which are required.

        Example:

        ```python
        >>> import torch
        >>> from PIL import Image
        >>> from transformers import AutoModel, AutoProcessor

        >>> model = AutoModel.from_pretrained("org/self1e-8b", trust_remote_code=True)
        >>> processor = AutoProcessor.from_pretrained("org/self1e-8b", trust_remote_code=True)
        >>> image = Image.open("street.jpg")  # 480 x 640
        >>> inputs = processor.prepare_segmentation_inputs(image, ["the red car", "the person on the left"])
        >>> with torch.no_grad():
        ...     outputs = model(**inputs)  # the image is given once, for both prompts
        >>> len(outputs.pred_masks)  # per prompt, (num_seg_tokens, rows * mask_grid_size, cols * mask_grid_size)
        2
        >>> predictions = processor.post_process_segmentation(
        ...     outputs.pred_masks, inputs["original_sizes"], inputs["prompt_to_image"]
        ... )
        >>> predictions[0].masks.shape  # one boolean mask per prompt, at the image's own size
        torch.Size([2, 480, 640])
        ```
        """
        _check_inputs(self.config, input_ids, inputs_embeds, pixel_values, image_features, gt_masks, cache)
        language_model_kwargs = {key: value for key, value in kwargs.items() if key not in PROCESSOR_ONLY_KEYS}
        # Image features F_V1 and F_V1^HQ (Sec. 3.2-3.3), once per image.
        image_outputs, image_features = self._image_inputs(pixel_values, image_features)
        # generate() passes a cache: it decodes text like the causal chat model and predicts no masks.
        segmenting = cache is None and input_ids is not None
        layout = None
        if segmenting or prompt_to_image is not None:
            layout = self._plan_layout(
                input_ids, attention_mask, image_features, tile_grids, has_thumbnail, prompt_to_image
            )
        if segmenting:
            attention_mask = self._language_model_attention_mask(input_ids, attention_mask, position_ids)
        # The language model with the segmentation attention mask (Sec. 3.5).
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            mm_encoder_outputs=self._language_model_image_inputs(image_outputs, image_features, layout),
            **language_model_kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        # The states that predict [SEG] and the image features through the segmentation head (Sec. 3.2-3.4).
        pred_masks = low_res_masks = None
        if segmenting:
            with_low_res = gt_masks is not None and self.config.use_low_res_aux_loss
            pred_masks, low_res_masks = self._predict_masks(
                input_ids, outputs.last_hidden_state, image_features, layout, with_low_res
            )
        # The text and mask losses (Sec. 3.6).
        losses = self._losses(logits, labels, pred_masks, low_res_masks, gt_masks, **language_model_kwargs)
        return Self1ESegmentationOutput(
            **losses,
            logits=logits,
            pred_masks=pred_masks,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
        )

    def _image_inputs(
        self, pixel_values: torch.FloatTensor | None, image_features: Self1EImageFeatures | None
    ) -> tuple[BaseModelOutputWithPooling | None, Self1EImageFeatures | None]:
        """The vision tower's output and both image features, from `pixel_values` or precomputed features."""
        if pixel_values is not None:
            return self._encode_images(pixel_values)
        if image_features is not None:
            return BaseModelOutputWithPooling(pooler_output=image_features.projected_features), image_features
        return None, None

    def _plan_layout(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None,
        image_features: Self1EImageFeatures | None,
        tile_grids: torch.LongTensor | list | None,
        has_thumbnail: torch.BoolTensor | list | None,
        prompt_to_image: torch.LongTensor | list | None,
    ) -> ImageLayout:
        """Which image each sample shows and where its `[SEG]` states are."""
        if input_ids is None:
            raise ValueError(
                "prompt_to_image needs input_ids: the image of a sample is checked against its image tokens"
            )
        return plan_image_layout(
            input_ids,
            attention_mask_2d=attention_mask if _is_2d(attention_mask) else None,
            image_token_id=self.config.image_token_id,
            seg_token_id=self.config.seg_token_id,
            tokens_per_tile=self.config.image_tokens_per_tile,
            num_tiles=0 if image_features is None else image_features.projected_features.shape[0],
            tile_grids=tile_grids,
            has_thumbnail=has_thumbnail,
            prompt_to_image=prompt_to_image,
        )

    def _language_model_image_inputs(
        self,
        image_outputs: BaseModelOutputWithPooling | None,
        image_features: Self1EImageFeatures | None,
        layout: ImageLayout | None,
    ) -> dict[str, BaseModelOutputWithPooling] | None:
        """The image embeddings `F_V1` the language model places at its image tokens: the images in the order the
        samples show them, an image repeated for every sample that shows it."""
        if image_features is None:
            return None
        if layout is None or layout.shows_images_in_order:
            return {"image": image_outputs}
        tiles = layout.image_tiles_of_samples(image_features.projected_features.device)
        return {"image": BaseModelOutputWithPooling(pooler_output=image_features.projected_features[tiles])}

    def _language_model_attention_mask(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, position_ids: torch.LongTensor | None
    ) -> torch.Tensor | dict | None:
        """The segmentation attention mask (Sec. 3.5), rendered by transformers for the attention backend in use."""
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
        mask_kwargs = {
            "config": text_config,
            "inputs_embeds": torch.empty(input_ids.shape + (0,), dtype=self.dtype, device=input_ids.device),
            "attention_mask": attention_mask,
            "cache": None,
            "position_ids": position_ids,
            "or_mask_function": or_function,
            "and_mask_function": and_function,
        }
        mask_mapping = {"full_attention": create_causal_mask(**mask_kwargs)}
        if "sliding_attention" in (getattr(text_config, "layer_types", None) or ()):
            mask_mapping["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
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
        logits of the training loss. Samples are batched by the tile grid of their image."""
        batch_size = input_ids.shape[0]
        pred_masks: list[torch.FloatTensor | None] = [None] * batch_size
        low_res_masks: list[torch.FloatTensor | None] = [None] * batch_size
        groups = layout.seg_samples_by_grid()
        if groups:
            # Hidden states at the image tokens, `F_IMG`, follow the tiles' order, as the image embeddings did.
            is_image = input_ids == self.config.image_token_id
            llm_tiles = hidden_states[is_image].view(-1, self.config.image_tokens_per_tile, hidden_states.shape[-1])
            # The state at the position before each [SEG] is the one that predicts it.
            seg_embeddings = self.seg_head.embed_seg(hidden_states[layout.seg_state_positions])
            seg_per_sample = seg_embeddings.split(layout.seg_counts)
        for grid, samples in groups.items():
            seg = pad_sequence([seg_per_sample[sample] for sample in samples], batch_first=True)
            logits, low_res = self._masks_on_grid(grid, samples, llm_tiles, image_features, layout, seg, with_low_res)
            for position, sample in enumerate(samples):
                count = layout.seg_counts[sample]
                pred_masks[sample] = logits[position, :count]
                if low_res is not None:
                    low_res_masks[sample] = low_res[position, :count]
        for sample in range(batch_size):
            if pred_masks[sample] is None:
                grid = layout.sample_grid(sample)
                size = (0, 0) if grid is None else self._canvas_size(grid)
                pred_masks[sample] = hidden_states.new_zeros((0, *size))
        return pred_masks, low_res_masks

    def _masks_on_grid(
        self,
        grid: tuple[int, int],
        samples: list[int],
        llm_tiles: torch.FloatTensor,
        image_features: Self1EImageFeatures,
        layout: ImageLayout,
        seg: torch.FloatTensor,
        with_low_res: bool,
    ) -> tuple[torch.FloatTensor, torch.FloatTensor | None]:
        """Mask logits `(len(samples), max_seg, height, width)` of samples whose images share one tile grid, and the
        low-resolution logits with `with_low_res`. Each distinct image is stitched, and its share of the head
        computed, once for all the samples that show it."""
        rows, cols = grid
        device = llm_tiles.device
        sample_images = [layout.images_per_sample[sample][0] for sample in samples]
        images = sorted(set(sample_images))
        image_of_sample = torch.tensor([images.index(image) for image in sample_images], device=device)
        image_tiles = layout.grid_tiles(images, device)

        def canvas(per_tile: torch.Tensor, count: int) -> torch.Tensor:
            return stitch_tiles(per_tile.view(count, rows * cols, -1, per_tile.shape[-1]), rows, cols)

        llm = canvas(llm_tiles[layout.language_model_grid_tiles(samples, device)], len(samples))
        projected = canvas(image_features.projected_features[image_tiles], len(images))
        high_res = canvas(image_features.high_res_features[image_tiles], len(images))
        head = self.seg_head
        if not with_low_res and self.config.image_feature_path == "residual_amplifier":
            # Without the auxiliary loss: the high-resolution canvas in bands of rows, never whole with its d
            # channels (same logits, bounded memory).
            rows_per_band = max(1, INFERENCE_BAND_POSITIONS // (high_res.shape[2] * self.config.shuffle_factor**2))
            return head.mask_logits_by_rows(llm, projected, high_res, seg, rows_per_band, image_of_sample), None
        image_hidden, low_res_embeddings = head.image_hidden_states(llm, projected, high_res, image_of_sample)
        low_res = None
        if with_low_res and low_res_embeddings is not None:
            low_res = head.dot_logits(low_res_embeddings, seg)
        return head.mask_logits(image_hidden, seg), low_res

    def _canvas_size(self, grid: tuple[int, int]) -> tuple[int, int]:
        """`(height, width)` of the mask logits of an image with tile grid `(rows, cols)`."""
        rows, cols = grid
        return rows * self.config.mask_grid_size, cols * self.config.mask_grid_size

    def _losses(
        self,
        logits: torch.FloatTensor,
        labels: torch.LongTensor | None,
        pred_masks: list[torch.FloatTensor] | None,
        low_res_masks: list[torch.FloatTensor | None] | None,
        gt_masks: list[torch.Tensor | None] | None,
        **kwargs,
    ) -> dict[str, torch.FloatTensor | None]:
        """The losses of Sec. 3.6 for the targets given: next-token cross-entropy, mask BCE and Dice, and their
        weighted sum."""
        losses = {"loss": None, "text_loss": None, "mask_bce_loss": None, "mask_dice_loss": None}
        terms = []
        if labels is not None:
            vocab_size = self.config.text_config.vocab_size
            losses["text_loss"] = self.loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **kwargs)
            terms.append(self.config.text_loss_weight * losses["text_loss"])
        if gt_masks is not None:
            if pred_masks is None:
                raise ValueError(
                    "gt_masks were given, but no masks were predicted: pass pixel_values and [SEG] tokens"
                )
            bce, dice = self._mask_losses(pred_masks, low_res_masks, gt_masks)
            losses["mask_bce_loss"], losses["mask_dice_loss"] = bce, dice
            terms.append(self.config.bce_loss_weight * bce + self.config.dice_loss_weight * dice)
        if terms:
            losses["loss"] = sum(terms[1:], terms[0])
        return losses

    def _mask_losses(
        self,
        pred_masks: list[torch.FloatTensor],
        low_res_masks: list[torch.FloatTensor | None],
        gt_masks: list[torch.Tensor | None],
    ) -> tuple[torch.FloatTensor, torch.FloatTensor]:
        """BCE and Dice of the masks (and of the low-resolution predictions), summed over the masks, divided by the
        batch size. Samples whose predictions and ground truths share sizes are scored in one pass (per-sample
        passes cost a launch per kernel per sample on a GPU)."""
        bce = dice = pred_masks[0].new_zeros((), dtype=torch.float32)
        for members in _group_by_mask_sizes(pred_masks, gt_masks).values():
            gt = torch.cat([gt_masks[sample] for sample in members]).to(pred_masks[members[0]].device).float()
            for head_masks in (pred_masks, low_res_masks):
                if head_masks[members[0]] is not None:
                    logits = torch.cat([head_masks[sample] for sample in members]).float()
                    group_bce, group_dice = mask_losses(logits, gt, self.config.gt_mask_short_side)
                    bce = bce + group_bce
                    dice = dice + group_dice
        batch_size = len(pred_masks)
        return bce / batch_size, dice / batch_size


def _group_by_mask_sizes(
    pred_masks: list[torch.FloatTensor], gt_masks: list[torch.Tensor | None]
) -> dict[tuple, list[int]]:
    """The samples with masks, grouped by prediction and ground-truth size, after checking the masks match."""
    if len(gt_masks) != len(pred_masks):
        raise ValueError(f"gt_masks has {len(gt_masks)} entries for a batch of {len(pred_masks)} samples")
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
    return groups


def _check_inputs(
    config: Self1EConfig,
    input_ids: torch.LongTensor | None,
    inputs_embeds: torch.FloatTensor | None,
    pixel_values: torch.FloatTensor | None,
    image_features: Self1EImageFeatures | None,
    gt_masks: list | None,
    cache: Cache | None,
) -> None:
    """Refuses, before any compute, inputs a segmentation forward pass would misread."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if pixel_values is not None and image_features is not None:
        raise ValueError("pass the images once: as pixel_values or as their image_features, not both")
    if cache is not None:
        return  # decoding text causally, as generate() does: no image or [SEG] positions are needed
    has_image = pixel_values is not None or image_features is not None
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


def _is_2d(attention_mask: torch.Tensor | dict | None) -> bool:
    return isinstance(attention_mask, torch.Tensor) and attention_mask.ndim == 2


__all__ = ["Self1EForSegmentation", "Self1EPreTrainedModel", "Self1ESegmentationOutput", "Self1EImageFeatures"]
