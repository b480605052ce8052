"""Conversion of other checkpoint layouts into Self1E folders (`python -m transformers_self1e.convert --help`)."""

from .record import compare_with_record, load_reference_record, run_reference_record
from .reference import convert_reference_checkpoint, convert_reference_tensor, self1e_config_from_reference

__all__ = [
    "compare_with_record",
    "convert_reference_checkpoint",
    "convert_reference_tensor",
    "load_reference_record",
    "run_reference_record",
    "self1e_config_from_reference",
]
