"""Reading safetensors checkpoints tensor by tensor, single-file or sharded, without loading them whole."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

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
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not weight_map:
        raise ValueError(f"{index} has no weight_map")
    shards = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [str(shard) for shard in shards if not shard.is_file()]
    if missing:
        raise FileNotFoundError(f"shards listed in {index} are missing: {', '.join(missing)}")
    return shards


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor is stored and its shape, as the safetensors header says."""

    shard: Path
    shape: tuple[int, ...]


def read_header(shards: list[Path]) -> dict[str, TensorInfo]:
    """Name -> shard and shape of every tensor, read from the safetensors headers only."""
    header = {}
    for shard in shards:
        with safe_open(shard, framework="pt") as reader:
            for name in reader.keys():
                if name in header:
                    raise ValueError(f"tensor {name!r} appears in more than one shard")
                header[name] = TensorInfo(shard, tuple(reader.get_slice(name).get_shape()))
    return header


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


__all__ = ["TensorInfo", "checkpoint_shards", "iter_shard_tensors", "read_header", "read_shapes", "read_tensor"]
