"""Conversion of InternVL3 base models into Self1E folders to start fine-tuning: `[SEG]` is added and the
segmentation head is initialised.

Two source layouts, told apart by `config.json`:

- transformers' `-hf` conversion (`model_type: internvl`, `InternVLForConditionalGeneration`), stored as
  `vision_tower.*`, `multi_modal_projector.*`, `language_model.model.*`, `language_model.lm_head.*` (the files of the
  `OpenGVLab/InternVL3-*-hf` repositories, and what `save_pretrained` still writes; transformers renames them on
  load), or under the module names `model.vision_tower.*`, `model.multi_modal_projector.*`, `model.language_model.*`,
  `lm_head.*`, which are ours.
- OpenGVLab's original (`model_type: internvl_chat`, `InternVLChatModel`): the SELF1E reference layout without the
  segmentation head (see `reference.py`).

What is added follows the reference training (`ANDYZAQ/SELF1E`, `train_hf_ivl_seq.py`, transformers 4.57.1):

- `[SEG]`: the reference calls `tokenizer.add_tokens(["[SEG]"])`, then `resize_token_embeddings(len(tokenizer))`,
  whose default `mean_resizing=True` draws each new row of the input embeddings and of the LM head from
  `N(mean, 1e-9 * covariance)` of the existing rows. We write the mean itself: deterministic, and within ~3e-5
  standard deviations of the reference's draw. (The reference also adds an unused `[SEGT]` token, a leftover its
  authors point out in the script; it is not added here, so `[SEG]` alone extends the vocabulary.)
- The segmentation head (`combine_decode_proj*` in the reference) is absent from the base checkpoint, so the
  reference's `from_pretrained` initialises it with `PreTrainedModel._init_weights`: weights from `N(0, 0.02)` (the
  config's `initializer_range`, 0.02 for Qwen2.5 and the library default) and zero biases. The script's later xavier
  loop matches names containing `"combine_proj"`, which `combine_decode_proj*` does not, so it leaves the head as is.
  We draw from the same distribution with a seeded generator; it is also what `Self1EPreTrainedModel._init_weights`
  does for a model built from scratch.
"""

import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import AutoTokenizer

from ..modeling import Self1EConfig, Self1EProcessor, Self1ESegmentationHead
from ..modeling.prompts_self1e import IMAGE_CONTEXT_TOKEN
from .checkpoint_files import checkpoint_shards
from .folder_writer import NewWeights, TensorConverter, write_converted_folder
from .reference import added_token_ids, convert_reference_tensor, self1e_config_from_reference

HF_LAYOUT = "internvl"
ORIGINAL_LAYOUT = "internvl_chat"
EMBEDDING_WEIGHTS = ("model.language_model.embed_tokens.weight", "lm_head.weight")
# Keys of an -hf `config.json` that describe the file rather than the model.
_FILE_KEYS = (
    "model_type",
    "architectures",
    "auto_map",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "_name_or_path",
)

# -hf name (stored or module form) -> our name.
_HF_RENAMES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(model\.)?vision_tower\."), "model.vision_tower."),
    (re.compile(r"^(model\.)?multi_modal_projector\."), "model.multi_modal_projector."),
    (re.compile(r"^(model\.language_model|language_model\.model)\."), "model.language_model."),
    (re.compile(r"^(language_model\.)?lm_head\."), "lm_head."),
]


def convert_internvl_hf_tensor(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Our name for one tensor of an `-hf` InternVL checkpoint; raises `KeyError` for names of no known part."""
    for pattern, replacement in _HF_RENAMES:
        new_name, found = pattern.subn(replacement, name)
        if found:
            return [(new_name, tensor)]
    raise KeyError(name)


def with_seg_token_row(convert: TensorConverter) -> TensorConverter:
    """`convert`, plus one row for `[SEG]` (the mean of the other rows) at the end of the embeddings and LM head."""

    def convert_with_row(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        return [
            (new_name, _append_mean_row(new_tensor) if new_name in EMBEDDING_WEIGHTS else new_tensor)
            for new_name, new_tensor in convert(name, tensor)
        ]

    return convert_with_row


def _append_mean_row(weight: torch.Tensor) -> torch.Tensor:
    mean = weight.to(torch.float32).mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean])


def initial_segmentation_head(config: Self1EConfig, seed: int = 0) -> NewWeights:
    """The segmentation head's weights as the reference training starts them: `N(0, initializer_range)` weights and
    zero biases, drawn from a generator seeded with `seed`."""
    std = getattr(config.get_text_config(), "initializer_range", 0.02)

    def build(device: str) -> dict[str, torch.Tensor]:
        with torch.device(device):
            head = Self1ESegmentationHead(config)
        if device != "meta":
            generator = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for module in head.modules():
                    if isinstance(module, nn.Linear):
                        module.weight.normal_(0.0, std, generator=generator)
                        module.bias.zero_()
        return {f"seg_head.{name}": tensor for name, tensor in head.state_dict().items()}

    return build


def self1e_config_from_internvl_hf(internvl_config: Mapping, seg_token_id: int | None = None) -> Self1EConfig:
    """A `Self1EConfig` from an `-hf` InternVL `config.json`, with one more token (`[SEG]`, by default the first new
    id) in the vocabulary."""
    settings = {key: value for key, value in internvl_config.items() if key not in _FILE_KEYS}
    text_config = dict(settings.pop("text_config"))
    vocab_size = text_config["vocab_size"]
    text_config["vocab_size"] = vocab_size + 1
    # Whether the LM head is tied is the language model's setting (InternVL3 unties all sizes).
    settings["tie_word_embeddings"] = text_config.get("tie_word_embeddings", False)
    seg_token_id = vocab_size if seg_token_id is None else seg_token_id
    return Self1EConfig(**settings, text_config=text_config, seg_token_id=seg_token_id)


def self1e_config_from_internvl_chat(
    internvl_config: Mapping, image_token_id: int, seg_token_id: int | None = None
) -> Self1EConfig:
    """A `Self1EConfig` from an original (`internvl_chat`) InternVL `config.json`, with `[SEG]` added as above."""
    llm_config = dict(internvl_config["llm_config"])
    vocab_size = llm_config["vocab_size"]
    llm_config["vocab_size"] = vocab_size + 1
    seg_token_id = vocab_size if seg_token_id is None else seg_token_id
    return self1e_config_from_reference({**internvl_config, "llm_config": llm_config}, image_token_id, seg_token_id)


def internvl_conversion(
    folder: Path, image_token_id: int | None = None, seg_token_id: int | None = None
) -> tuple[Self1EConfig, TensorConverter]:
    """The Self1E config of an InternVL checkpoint folder and the converter of its tensors (without `[SEG]`)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: pass the folder of an InternVL checkpoint")
    content = json.loads(config_path.read_text())
    layout = content.get("model_type")
    if layout == HF_LAYOUT:
        return self1e_config_from_internvl_hf(content, seg_token_id), convert_internvl_hf_tensor
    if layout == ORIGINAL_LAYOUT:
        if image_token_id is None:
            image_token_id = added_token_ids(folder).get(IMAGE_CONTEXT_TOKEN)
        if image_token_id is None:
            raise ValueError(f"the id of {IMAGE_CONTEXT_TOKEN} is unknown: pass it, or keep the tokenizer in {folder}")
        return self1e_config_from_internvl_chat(content, image_token_id, seg_token_id), convert_reference_tensor
    raise ValueError(f"{config_path} has model_type {layout!r}; expected {HF_LAYOUT!r} or {ORIGINAL_LAYOUT!r}")


def processor_from_tokenizer(folder: Path, config: Self1EConfig) -> Self1EProcessor | None:
    """A `Self1EProcessor` on the tokenizer saved in `folder` (which gets `[SEG]`), checked against `config`; `None`
    when the folder has no tokenizer."""
    if not (folder / "tokenizer_config.json").is_file():
        return None
    processor = Self1EProcessor.from_model_config(config, AutoTokenizer.from_pretrained(folder))
    processor.check_model_config(config)
    return processor


def convert_internvl_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    image_token_id: int | None = None,
    seg_token_id: int | None = None,
    seed: int = 0,
    check_only: bool = False,
    overwrite: bool = False,
) -> Path:
    """Converts an InternVL3 base checkpoint folder (`-hf` or original layout) into a Self1E folder ready for
    fine-tuning: `[SEG]` added to the vocabulary, a freshly initialised segmentation head, and, when the source folder
    has a tokenizer, a `Self1EProcessor` whose tokenizer has `[SEG]`. `out_dir` must be missing or empty unless
    `overwrite`, which replaces the converted model's files in it and keeps the others."""
    folder = Path(checkpoint)
    config, convert = internvl_conversion(folder, image_token_id, seg_token_id)
    return write_converted_folder(
        checkpoint_shards(folder),
        with_seg_token_row(convert),
        config,
        out_dir,
        dtype,
        new_weights=initial_segmentation_head(config, seed),
        check_only=check_only,
        overwrite=overwrite,
        inputs=[folder],
        processor=processor_from_tokenizer(folder, config),
    )


__all__ = [
    "convert_internvl_checkpoint",
    "convert_internvl_hf_tensor",
    "initial_segmentation_head",
    "internvl_conversion",
    "processor_from_tokenizer",
    "self1e_config_from_internvl_chat",
    "self1e_config_from_internvl_hf",
    "with_seg_token_row",
]
