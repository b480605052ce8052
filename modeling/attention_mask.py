"""The segmentation attention mask of SELF1E (paper Sec. 3.5), expressed as transformers mask functions.

A mask function `fn(batch_idx, head_idx, q_idx, kv_idx) -> bool` is OR-ed onto the causal mask by
`transformers.masking_utils`, which then renders it for the attention implementation in use (sdpa, eager, flex,
flash), applies padding, and never materialises a float mask per head.
"""

from typing import Callable

import torch
from transformers.masking_utils import and_masks, causal_mask_function, or_masks, padding_mask_function, sdpa_mask

MaskFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def segmentation_mask_function(
    input_ids: torch.LongTensor, image_token_id: int, seg_token_id: int, variant: str
) -> MaskFunction | None:
    """What samples containing `[SEG]` may see beyond the causal mask (paper Sec. 3.5).

    Samples without `[SEG]` keep the plain causal mask in every variant, so VQA is unaffected.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            The tokens, where the image and `[SEG]` tokens are found.
        image_token_id (`int`):
            Id of the image tokens.
        seg_token_id (`int`):
            Id of the `[SEG]` token.
        variant (`str`):
            Paper Table 7: `"causal"` (nothing more), `"bidirectional_image"` (image tokens see each other),
            `"bidirectional_image_with_seg"` (and the `[SEG]` tokens) or `"bidirectional"` (every token sees every
            token).

    Returns:
        The mask function to OR onto the causal mask, `None` for `"causal"`.
    """
    if variant == "causal":
        return None
    is_image = input_ids == image_token_id
    is_seg = input_ids == seg_token_id
    has_seg = is_seg.any(dim=-1)

    if variant == "bidirectional":

        def every_token_in_seg_samples(batch_idx, head_idx, q_idx, kv_idx):
            return has_seg[batch_idx] & (q_idx >= 0) & (kv_idx >= 0)

        return every_token_in_seg_samples

    if variant == "bidirectional_image":

        def image_sees_image(batch_idx, head_idx, q_idx, kv_idx):
            return has_seg[batch_idx] & is_image[batch_idx, q_idx] & is_image[batch_idx, kv_idx]

        return image_sees_image

    if variant == "bidirectional_image_with_seg":
        is_image_or_seg = is_image | is_seg

        def image_sees_image_and_seg(batch_idx, head_idx, q_idx, kv_idx):
            return has_seg[batch_idx] & is_image[batch_idx, q_idx] & is_image_or_seg[batch_idx, kv_idx]

        return image_sees_image_and_seg
    raise ValueError(f"unknown segmentation attention variant {variant!r}")


def prepared_mask_function(mask_4d: torch.Tensor) -> MaskFunction:
    """Wraps a prepared mask as a mask function.

    Args:
        mask_4d (`torch.Tensor` of shape `(batch_size, 1, query_length, key_length)`):
            Boolean (True = may attend), or additive float (0 = may attend, the dtype's minimum = may not).
    """
    if mask_4d.dtype != torch.bool:
        mask_4d = mask_4d > torch.finfo(mask_4d.dtype).min / 2
    allowed = mask_4d[:, 0]

    def lookup(batch_idx, head_idx, q_idx, kv_idx):
        return allowed[batch_idx, q_idx, kv_idx]

    return lookup


def build_segmentation_attention_mask(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None,
    image_token_id: int,
    seg_token_id: int,
    variant: str = "bidirectional_image_with_seg",
) -> torch.BoolTensor:
    """The full segmentation attention mask of a batch, e.g. for a data collator.

    Args:
        input_ids (`torch.LongTensor` of shape `(batch_size, length)`):
            The tokens.
        attention_mask (`torch.Tensor` of shape `(batch_size, length)`, *optional*):
            Padding mask (1 = real token); padding keys are never attended.
        image_token_id (`int`), seg_token_id (`int`), variant (`str`):
            As in [`segmentation_mask_function`].

    Returns:
        `torch.BoolTensor` of shape `(batch_size, 1, length, length)`, True where a query may attend to a key.
    """
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    batch_size, length = input_ids.shape
    mask_function = causal_mask_function
    extra = segmentation_mask_function(input_ids, image_token_id, seg_token_id, variant)
    if extra is not None:
        mask_function = or_masks(mask_function, extra)

    if attention_mask is not None:
        mask_function = and_masks(mask_function, padding_mask_function(attention_mask.to(torch.bool)))
    return sdpa_mask(
        batch_size=batch_size,
        q_length=length,
        kv_length=length,
        mask_function=mask_function,
        allow_is_causal_skip=False,
        device=input_ids.device,
    )


__all__ = ["build_segmentation_attention_mask", "prepared_mask_function", "segmentation_mask_function"]
