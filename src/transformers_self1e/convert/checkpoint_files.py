"""Reading safetensors checkpoints tensor by tensor, single-file or sharded, without loading them whole."""

import json
from collections.abc import Iterator
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


def read_shapes(shards: list[Path]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor, read from the safetensors headers only."""
    shapes = {}
    for shard in shards:
        with safe_open(shard, framework="pt") as reader:
            for name in reader.keys():
                if name in shapes:
                    raise ValueError(f"tensor {name!r} appears in more than one shard")
                shapes[name] = tuple(reader.get_slice(name).get_shape())
    return shapes


def iter_shard_tensors(shard: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of one safetensors file, one at a time."""
    with safe_open(shard, framework="pt") as reader:
        for name in reader.keys():
            yield name, reader.get_tensor(name)


__all__ = ["checkpoint_shards", "iter_shard_tensors", "read_shapes"]
