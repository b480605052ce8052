"""Writing a converted checkpoint as a `Self1EForSegmentation` folder, one source shard at a time.

Names, shapes and dtypes are checked against the config from the safetensors headers, and the output folder is
checked (see `output_folder.py`), before any weight is read. The model is only ever built on the meta device, so
converting needs about one shard of memory. Weights the source does not have (the segmentation head of a base model)
come from a `NewWeights` function, called on the meta device for the check and on the CPU for writing.
"""

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers.dynamic_module_utils import custom_object_save

from ..modeling import Self1EConfig, Self1EForSegmentation, Self1EProcessor
from .checkpoint_files import SAFETENSORS_INDEX, SAFETENSORS_WEIGHTS, iter_shard_tensors, read_header
from .output_folder import check_output_folder, staged_output

TensorConverter = Callable[[str, torch.Tensor], list[tuple[str, torch.Tensor]]]
NewWeights = Callable[[str], dict[str, torch.Tensor]]
"""Builds weights that the source checkpoint lacks, on the given device (`"meta"` for the shape check)."""


def meta_weights(config: Self1EConfig) -> tuple[dict[str, torch.Tensor], set[str]]:
    """Every weight of a model with `config` as a meta tensor, and the names that may be absent because they are
    tied."""
    with torch.device("meta"):
        model = Self1EForSegmentation(config)
    tied = set(model._tied_weights_keys) if config.tie_word_embeddings else set()
    return model.state_dict(), tied


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_conversion(
    source_shapes: dict[str, tuple[int, ...]],
    convert: TensorConverter,
    config: Self1EConfig,
    new_shapes: dict[str, tuple[int, ...]] | None = None,
    source_dtypes: dict[str, torch.dtype] | None = None,
) -> set[str]:
    """Converts names and shapes on meta tensors; raises one error listing every problem, else returns the names to
    write (tied copies are left out). `new_shapes` are weights initialised by the conversion, not read;
    `source_dtypes` (float32 where not given) are checked against the model's floating-point weights."""
    problems, names = conversion_problems(source_shapes, convert, config, new_shapes, source_dtypes)
    if problems:
        raise ValueError("the checkpoint does not fit the config:\n  " + "\n  ".join(problems))
    return names


def conversion_problems(
    source_shapes: dict[str, tuple[int, ...]],
    convert: TensorConverter,
    config: Self1EConfig,
    new_shapes: dict[str, tuple[int, ...]] | None = None,
    source_dtypes: dict[str, torch.dtype] | None = None,
) -> tuple[list[str], set[str]]:
    """What `check_conversion` checks: the problems found (one line per kind) and the names to write."""
    weights, tied = meta_weights(config)
    wanted = {name: tuple(tensor.shape) for name, tensor in weights.items()}
    floating = {name: tensor.is_floating_point() for name, tensor in weights.items()}
    produced: dict[str, tuple[int, ...]] = {}
    unknown, wrong_dtypes, problems = [], [], []
    for name, shape in source_shapes.items():
        dtype = (source_dtypes or {}).get(name, torch.float32)
        try:
            converted = convert(name, torch.empty(shape, dtype=dtype, device="meta"))
        except KeyError:
            unknown.append(name)
            continue
        produced.update({new_name: tuple(tensor.shape) for new_name, tensor in converted})
        for new_name, tensor in converted:
            if new_name in floating and tensor.is_floating_point() != floating[new_name]:
                kind = "floating-point" if floating[new_name] else "not floating-point"
                wrong_dtypes.append(f"{name} is {_dtype_name(dtype)}, but the model's {new_name} is {kind}")
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
    if wrong_dtypes:
        problems.append(f"dtype mismatches: {format_names(wrong_dtypes)}")
    return problems, {name for name in produced if name not in tied}


def write_converted_folder(
    shards: list[Path],
    convert: TensorConverter,
    config: Self1EConfig,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    new_weights: NewWeights | None = None,
    check_only: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | Path] = (),
    processor: Self1EProcessor | None = None,
) -> Path:
    """Converts `shards` into `out_dir` (safetensors weights, `config.json` with `auto_map`, remote-code files and
    `processor`'s files).

    Args:
        shards: source safetensors files.
        convert: maps one source tensor to its converted name(s) and tensor(s); raises `KeyError` for unknown names.
        config: configuration of the converted model.
        out_dir: destination folder: missing or empty, or any folder with `overwrite` (see `check_output_folder`).
        dtype: cast floating-point weights to this dtype; `None` keeps the stored dtype.
        new_weights: weights the source lacks, written to one more shard after the converted ones.
        check_only: check names, shapes and dtypes against the config, then stop without writing anything.
        overwrite: replace the files this conversion writes in a non-empty `out_dir`; other files are kept.
        inputs: files and folders the conversion reads besides `shards` (config, adapter...), which `out_dir` must
            not hold.
        processor: a processor to save with the model.
    """
    new_shapes = None if new_weights is None else {name: tuple(t.shape) for name, t in new_weights("meta").items()}
    header = read_header(shards)
    shapes = {name: info.shape for name, info in header.items()}
    dtypes = {name: info.dtype for name, info in header.items()}
    keep = check_conversion(shapes, convert, config, new_shapes, dtypes)
    out_dir = Path(out_dir)
    if check_only:
        return out_dir
    file_names = _shard_file_names(len(shards) + (new_weights is not None))
    weight_files = file_names + ([SAFETENSORS_INDEX] if len(file_names) > 1 else [])
    kept_processor_config = config if processor is None else None
    check_output_folder(out_dir, [*shards, *inputs], weight_files, overwrite, kept_processor_config)

    with staged_output(out_dir) as staging:
        weight_map, stored_dtype = {}, None
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
            (staging / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2))
        config.dtype = stored_dtype
        with torch.device("meta"):
            custom_object_save(Self1EForSegmentation(config), staging, config=config)
        config.save_pretrained(staging)
        if processor is not None:
            processor.save_pretrained(staging)
    return out_dir


def _shard_file_names(count: int) -> list[str]:
    if count == 1:
        return [SAFETENSORS_WEIGHTS]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def format_names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


__all__ = [
    "NewWeights",
    "TensorConverter",
    "check_conversion",
    "conversion_problems",
    "format_names",
    "meta_weights",
    "write_converted_folder",
]
