"""Reference records (`../shared/reference/README.md`): inputs and expected outputs of the authors' implementation.

A record directory holds `meta.json`, `official_model.safetensors` (reference key layout) and
`inputs_and_outputs.safetensors`. Running a converted model on a record and comparing is how conversion is verified.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..modeling import Self1EForSegmentation

TRAIN_LOSS_KEYS = {
    "train_loss": "loss",
    "train_ce_loss": "text_loss",
    "train_mask_bce_loss": "mask_bce_loss",
    "train_mask_dice_loss": "mask_dice_loss",
}


@dataclass
class ReferenceRecord:
    """One record: the reference config, its token ids, the model inputs and the expected outputs."""

    meta: dict
    inputs: dict[str, torch.Tensor]
    tile_grids: list[tuple[int, int]]
    gt_masks: list[torch.Tensor]
    expected: dict[str, torch.Tensor]

    @property
    def token_ids(self) -> dict[str, int]:
        return self.meta["token_ids"]

    @property
    def batch_size(self) -> int:
        return self.inputs["input_ids"].shape[0]


def load_reference_record(record_dir: str | Path) -> ReferenceRecord:
    record_dir = Path(record_dir)
    for name in ("meta.json", "inputs_and_outputs.safetensors"):
        if not (record_dir / name).is_file():
            raise FileNotFoundError(f"{record_dir} is not a reference record: {name} is missing")
    meta = json.loads((record_dir / "meta.json").read_text())
    tensors = load_file(record_dir / "inputs_and_outputs.safetensors")
    batch_size = tensors["input_ids"].shape[0]
    # Records store tile grids as (cols, rows); we use (rows, cols).
    grids = [(int(rows), int(cols)) for cols, rows in meta["target_aspect_ratios_cols_rows"]]
    expected = {f"pred_mask_logits_{i}": tensors[f"pred_mask_logits_{i}"] for i in range(batch_size)}
    expected.update({key: tensors[key] for key in TRAIN_LOSS_KEYS if key in tensors})
    inputs = {
        "input_ids": tensors["input_ids"],
        "attention_mask": tensors["attention_mask_2d"],
        "position_ids": tensors["position_ids"],
        "pixel_values": tensors["pixel_values"],
        "labels": tensors["labels"],
        "attention_mask_4d": tensors["attention_mask_4d"],
    }
    gt_masks = [tensors[f"gt_masks_{i}"] for i in range(batch_size)]
    return ReferenceRecord(meta, inputs, grids, gt_masks, expected)


def run_reference_record(
    model: Self1EForSegmentation, record: ReferenceRecord, use_prepared_mask: bool = False
) -> dict[str, torch.Tensor]:
    """What `model` computes for every expected tensor of `record`: mask logits in eval mode, losses in train mode.

    With `use_prepared_mask`, the record's own 4D attention mask is passed instead of building ours from `input_ids`.
    """
    inputs = dict(record.inputs)
    mask_4d = inputs.pop("attention_mask_4d")
    if use_prepared_mask:
        inputs["attention_mask"] = mask_4d
    labels = inputs.pop("labels")
    was_training = model.training
    actual = {}
    try:
        with torch.no_grad():
            model.eval()
            outputs = model(**inputs, tile_grids=record.tile_grids)
            for i, logits in enumerate(outputs.pred_masks):
                key = f"pred_mask_logits_{i}"
                expected = record.expected[key]
                # Samples without [SEG] are empty in both; the reference reports them as (0, 1, 1).
                actual[key] = logits if logits.numel() else logits.new_zeros(expected.shape)
            model.train()
            outputs = model(**inputs, tile_grids=record.tile_grids, labels=labels, gt_masks=record.gt_masks)
            for record_key, output_key in TRAIN_LOSS_KEYS.items():
                if record_key in record.expected:
                    actual[record_key] = getattr(outputs, output_key).reshape(1)
    finally:
        model.train(was_training)
    return actual


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """`max |actual - expected| / max |expected|` (0 for two empty tensors); shape mismatches are infinite."""
    if actual.shape != expected.shape:
        return float("inf")
    if expected.numel() == 0:
        return 0.0
    difference = (actual.double() - expected.double()).abs().max()
    return float(difference / expected.double().abs().max().clamp_min(1e-12))


def compare_with_record(model: Self1EForSegmentation, record: ReferenceRecord, **kwargs) -> dict[str, float]:
    """Relative error of every expected tensor of `record`."""
    actual = run_reference_record(model, record, **kwargs)
    return {key: relative_error(actual[key], expected) for key, expected in record.expected.items()}


__all__ = ["ReferenceRecord", "compare_with_record", "load_reference_record", "relative_error", "run_reference_record"]
