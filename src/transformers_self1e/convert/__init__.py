"""Conversion of other checkpoint layouts into Self1E folders (`python -m transformers_self1e.convert --help`)."""

from .internvl import convert_internvl_checkpoint, initial_segmentation_head
from .lora import LoraMerger, load_lora_adapter
from .record import compare_with_record, load_reference_record, run_reference_record
from .reference import convert_reference_checkpoint, convert_reference_tensor, self1e_config_from_reference
from .reference_layout import reference_checkpoint_shapes

__all__ = [
    "LoraMerger",
    "compare_with_record",
    "convert_internvl_checkpoint",
    "convert_reference_checkpoint",
    "convert_reference_tensor",
    "initial_segmentation_head",
    "load_lora_adapter",
    "load_reference_record",
    "reference_checkpoint_shapes",
    "run_reference_record",
    "self1e_config_from_reference",
]
