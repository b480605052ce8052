"""Writing a converted checkpoint as a `Self1EForSegmentation` folder, one source shard at a time.

Names and shapes are checked against the config from the safetensors headers before any weight is read, and the
model is only ever built on the meta device, so converting needs about one shard of memory. Weights the source does
not have (the segmentation head of a base model) come from a `NewWeights` function, called on the meta device for
the check and on the CPU for writing.
"""

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers.dynamic_module_utils import custom_object_save

from ..modeling import Self1EConfig, Self1EForSegmentation
from .checkpoint_files import iter_shard_tensors, read_shapes

TensorConverter = Callable[[str, torch.Tensor], list[tuple[str, torch.Tensor]]]
NewWeights = Callable[[str], dict[str, torch.Tensor]]
"""Builds weights that the source checkpoint lacks, on the given device (`"meta"` for the shape check)."""


def expected_shapes(config: Self1EConfig) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """Shapes of every weight of a model with `config`, and the names that may be absent because they are tied."""
    with torch.device("meta"):
        model = Self1EForSegmentation(config)
    shapes = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    tied = set(model._tied_weights_keys) if config.tie_word_embeddings else set()
    return shapes, tied


def check_conversion(
    source_shapes: dict[str, tuple[int, ...]],
    convert: TensorConverter,
    config: Self1EConfig,
    new_shapes: dict[str, tuple[int, ...]] | None = None,
) -> set[str]:
    """Converts names and shapes on meta tensors; raises one error listing every problem, else returns the names to
    write (tied copies are left out). `new_shapes` are weights initialised by the conversion, not read."""
    wanted, tied = expected_shapes(config)
    produced: dict[str, tuple[int, ...]] = {}
    unknown, problems = [], []
    for name, shape in source_shapes.items():
        try:
            converted = convert(name, torch.empty(shape, device="meta"))
        except KeyError:
            unknown.append(name)
            continue
        produced.update({new_name: tuple(tensor.shape) for new_name, tensor in converted})
    if unknown:
        problems.append(f"unexpected keys (not part of the source layout): {format_names(unknown)}")
    both = [name for name in new_shapes or {} if name in produced]
    if both:
        problems.append(f"keys both in the checkpoint and newly initialised: {format_names(both)}")
    produced.update(new_shapes or {})
    unexpected = [name for name in produced if name not in wanted]
    if unexpected:
        problems.append(f"unexpected keys (no such weight in the model): {format_names(unexpected)}")
    missing = [name for name in wanted if name not in produced and name not in tied]
    if missing:
        problems.append(f"missing keys: {format_names(missing)}")
    mismatched = [
        f"{name} {produced[name]} (config expects {wanted[name]})"
        for name in produced
        if name in wanted and produced[name] != wanted[name]
    ]
    if mismatched:
        problems.append(f"shape mismatches: {format_names(mismatched)}")
    if problems:
        raise ValueError("the checkpoint does not fit the config:\n  " + "\n  ".join(problems))
    return {name for name in produced if name not in tied}


def write_converted_folder(
    shards: list[Path],
    convert: TensorConverter,
    config: Self1EConfig,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    new_weights: NewWeights | None = None,
    check_only: bool = False,
) -> Path:
    """Converts `shards` into `out_dir` (safetensors weights, `config.json` with `auto_map`, remote-code files).

    Args:
        shards: source safetensors files.
        convert: maps one source tensor to its converted name(s) and tensor(s); raises `KeyError` for unknown names.
        config: configuration of the converted model.
        out_dir: destination folder (created; existing weight files in it are replaced).
        dtype: cast floating-point weights to this dtype; `None` keeps the stored dtype.
        new_weights: weights the source lacks, written to one more shard after the converted ones.
        check_only: check names and shapes against the config, then stop without writing anything.
    """
    new_shapes = None if new_weights is None else {name: tuple(t.shape) for name, t in new_weights("meta").items()}
    keep = check_conversion(read_shapes(shards), convert, config, new_shapes)
    out_dir = Path(out_dir)
    if check_only:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    # Write into a temporary folder first so that a failure never leaves a half-converted model behind.
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".converting-"))
    try:
        weight_map, stored_dtype = {}, None
        file_names = _shard_file_names(len(shards) + (new_weights is not None))
        for shard, file_name in zip(shards, file_names):
            tensors = {}
            for name, tensor in iter_shard_tensors(shard):
                for new_name, new_tensor in convert(name, tensor):
                    if new_name not in keep:
                        continue
                    if dtype is not None and new_tensor.is_floating_point():
                        new_tensor = new_tensor.to(dtype)
                    stored_dtype = stored_dtype or (new_tensor.dtype if new_tensor.is_floating_point() else None)
                    tensors[new_name] = new_tensor.contiguous()
                    weight_map[new_name] = file_name
            save_file(tensors, staging / file_name, metadata={"format": "pt"})
            del tensors
        if new_weights is not None:
            # Stored like the converted weights, so the folder has a single dtype.
            target_dtype = dtype or stored_dtype
            tensors = {
                name: tensor.to(target_dtype) if target_dtype and tensor.is_floating_point() else tensor
                for name, tensor in new_weights("cpu").items()
            }
            save_file(tensors, staging / file_names[-1], metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(tensors, file_names[-1]))
            del tensors
        if len(file_names) > 1:
            index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
            (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        for stale in list(out_dir.glob("model*.safetensors")) + list(out_dir.glob("model.safetensors.index.json")):
            stale.unlink()
        for produced in staging.iterdir():
            shutil.move(str(produced), out_dir / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    config.dtype = stored_dtype
    with torch.device("meta"):
        custom_object_save(Self1EForSegmentation(config), out_dir, config=config)
    config.save_pretrained(out_dir)
    return out_dir


def _shard_file_names(count: int) -> list[str]:
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def format_names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


__all__ = [
    "NewWeights",
    "TensorConverter",
    "check_conversion",
    "expected_shapes",
    "format_names",
    "write_converted_folder",
]
