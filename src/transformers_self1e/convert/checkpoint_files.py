"""Reading safetensors checkpoints tensor by tensor, single-file or sharded, without loading them whole."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers.modeling_utils import str_to_torch_dtype

SAFETENSORS_WEIGHTS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"


def checkpoint_shards(checkpoint: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint given as a `.safetensors` file, an index file, or a folder."""
    path = Path(checkpoint)
    if path.is_dir():
        index = path / SAFETENSORS_INDEX
        if index.is_file():
            return _shards_from_index(index)
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors files (and no {SAFETENSORS_INDEX}) in {path}")
        return files
    if path.name.endswith(".index.json") and path.is_file():
        return _shards_from_index(path)
    if path.suffix == ".safetensors" and path.is_file():
        return [path]
    raise FileNotFoundError(f"{path} is neither a .safetensors file, a safetensors index, nor a folder holding them")


def _shards_from_index(index: Path) -> list[Path]:
    try:
        content = json.loads(index.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{index} is not valid JSON: {error}") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index} has no weight_map")
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [str(shard) for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(f"shards listed in {index} are missing: {', '.join(missing)}")
    return shards


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor is stored, its shape and its dtype, as the safetensors header says."""

    shard: Path
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32


def read_header(shards: list[Path]) -> dict[str, TensorInfo]:
    """Name -> shard, shape and dtype of every tensor, read from the safetensors headers only.

    Raises:
        ValueError: a file is not a complete safetensors file, a tensor has a dtype the converter does not handle,
            or a name appears in several shards.
    """
    header = {}
    for shard in shards:
        try:
            with safe_open(shard, framework="pt") as reader:
                for name in reader.keys():
                    if name in header:
                        raise ValueError(f"tensor {name!r} appears in more than one shard")
                    tensor = reader.get_slice(name)
                    header[name] = TensorInfo(shard, tuple(tensor.get_shape()), _torch_dtype(tensor.get_dtype(), name))
        except SafetensorError as error:
            raise ValueError(f"{shard} is not a readable safetensors file (truncated or corrupt?): {error}") from None
    return header


def _torch_dtype(stored: str, name: str) -> torch.dtype:
    if stored not in str_to_torch_dtype:
        raise ValueError(f"tensor {name!r} has the safetensors dtype {stored}, which the converter does not handle")
    return str_to_torch_dtype[stored]


def read_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor, read from the safetensors headers only."""
    return {name: info.shape for name, info in read_header(shards).items()}


def read_tensor(name: str, info: TensorInfo) -> torch.Tensor:
    """One tensor of a shard, without reading the others."""
    with safe_open(info.shard, framework="pt") as reader:
        return reader.get_tensor(name)


def iter_shard_tensors(shard: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of one safetensors file, one at a time."""
    with safe_open(shard, framework="pt") as reader:
        for name in reader.keys():
            yield name, reader.get_tensor(name)


__all__ = [
    "SAFETENSORS_INDEX",
    "SAFETENSORS_WEIGHTS",
    "TensorInfo",
    "checkpoint_shards",
    "iter_shard_tensors",
    "read_header",
    "read_shapes",
    "read_tensor",
]
