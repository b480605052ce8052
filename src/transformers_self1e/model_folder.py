"""Checks of a saved Self1E model folder, so that a broken folder gives one error naming the file and the problem
instead of a traceback from deep inside the loaders.

    model, processor = load_model_and_processor("path/to/model", device="cuda", dtype=torch.bfloat16)
"""

import json
import os
from pathlib import Path

import torch
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .convert.checkpoint_files import SAFETENSORS_INDEX, SAFETENSORS_WEIGHTS, checkpoint_shards, read_header
from .convert.folder_writer import conversion_problems
from .modeling import Self1EConfig, Self1EForSegmentation, Self1EProcessor
from .quantization import quantization_config

CONFIG_FILE = "config.json"
# The image processor's settings: `processor_config.json` as `save_pretrained` writes it, or the older
# `preprocessor_config.json`.
IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
TOKENIZER_FILE = "tokenizer.json"
SLOW_TOKENIZER_FILES = ("vocab.json", "merges.txt")


def is_local_path(name: str | Path) -> bool:
    """Whether `name` names a local file or folder rather than a Hub repository: a `Path`, anything that exists or
    whose first part (`outputs` of `outputs/model`) exists, starts with `.`, `~` or a path separator, or is not a valid
    repo id (such as `a/b/c` or `C:\\model`). A local path is never sent to the Hub, whose error about repo ids or
    connections would only hide the missing folder."""
    if isinstance(name, Path):
        return True
    if name.startswith((".", "~", os.sep)) or os.path.exists(name) or os.path.exists(name.split("/")[0]):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def check_model_folder(path: str | Path, check_processor: bool = True) -> Self1EConfig:
    """Checks a saved Self1E model folder without reading its weights, and returns its config.

    Checked: `config.json` (JSON, a Self1E config with `text_config`, `vision_config` and valid values), the
    safetensors weights (complete headers, and the names, shapes and dtypes of the config's model) and, with
    `check_processor`, the processor files (the image processor's settings and a tokenizer with its vocabulary).

    Raises:
        FileNotFoundError: the folder, `config.json`, the weights or the processor files are missing.
        ValueError: a file is invalid; the message names it.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {path}")
    if not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no SELF1E model in {path} (no {CONFIG_FILE})")
    config = _read_config(folder / CONFIG_FILE)
    _check_weights(folder, config)
    if check_processor:
        _check_processor_files(folder)
    return config


def load_model_and_processor(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
    quantization: str | None = None,
) -> tuple[Self1EForSegmentation, Self1EProcessor]:
    """The model of a saved folder, in eval mode on `device` in `dtype` (its weights quantized as `quantization`,
    `int8` or `int4`, says: see `transformers_self1e.quantization`), and its processor; the folder is checked with
    `check_model_folder` and the processor against the model's config before any weight is loaded.

    Raises:
        FileNotFoundError, ValueError: see `check_model_folder`; also when the processor does not fit the model.
        ModuleNotFoundError: the quantization backend of `device` is not installed.
    """
    config = check_model_folder(path)
    processor = Self1EProcessor.from_pretrained(path)
    problems = processor.check_model_config(config, raise_error=False)
    if problems:
        raise ValueError(f"the processor files in {path} do not fit its {CONFIG_FILE}:\n- " + "\n- ".join(problems))
    if quantization is None:
        model = Self1EForSegmentation.from_pretrained(path, config=config, dtype=dtype).to(device)
    else:
        # Quantized weights are placed while loading; bitsandbytes models cannot be moved afterwards.
        placement = {"quantization_config": quantization_config(quantization, device, dtype), "device_map": device}
        model = Self1EForSegmentation.from_pretrained(path, config=config, dtype=dtype, **placement)
    return model.eval(), processor


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if isinstance(content, dict):
        return content
    raise ValueError(f"{path} holds a JSON {type(content).__name__}, not an object")


def _read_config(path: Path) -> Self1EConfig:
    content = _read_json(path)
    if content.get("model_type") != Self1EConfig.model_type:
        raise ValueError(
            f"{path} describes a model of type {content.get('model_type')!r}, not a Self1E model "
            f"(model_type {Self1EConfig.model_type!r})"
        )
    try:
        return Self1EConfig.from_dict(content)
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{path} is not a valid Self1E config: {error}") from None


def _check_weights(folder: Path, config: Self1EConfig) -> None:
    if (folder / SAFETENSORS_INDEX).is_file():
        shards = checkpoint_shards(folder / SAFETENSORS_INDEX)
    elif (folder / SAFETENSORS_WEIGHTS).is_file():
        shards = [folder / SAFETENSORS_WEIGHTS]
    else:
        raise FileNotFoundError(f"{folder} has no weights ({SAFETENSORS_WEIGHTS} or {SAFETENSORS_INDEX})")
    header = read_header(shards)
    shapes = {name: info.shape for name, info in header.items()}
    dtypes = {name: info.dtype for name, info in header.items()}
    problems, _ = conversion_problems(shapes, lambda name, tensor: [(name, tensor)], config, source_dtypes=dtypes)
    if problems:
        weights = ", ".join(shard.name for shard in shards)
        raise ValueError(
            f"the weights of {folder} ({weights}) do not fit its {CONFIG_FILE}:\n  " + "\n  ".join(problems)
        )


def _check_processor_files(folder: Path) -> None:
    image_processor_files = [folder / name for name in IMAGE_PROCESSOR_FILES if (folder / name).is_file()]
    if not image_processor_files:
        raise FileNotFoundError(
            f"{folder} has no processor files ({IMAGE_PROCESSOR_FILES[0]}, {TOKENIZER_FILE}): save the processor "
            "with the model (processor.save_pretrained)"
        )
    for path in image_processor_files + [folder / "tokenizer_config.json"]:
        if path.is_file():
            _read_json(path)
    if (folder / TOKENIZER_FILE).is_file():
        _read_json(folder / TOKENIZER_FILE)
    elif not all((folder / name).is_file() for name in SLOW_TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{folder / TOKENIZER_FILE} is missing (nor are there {' and '.join(SLOW_TOKENIZER_FILES)}): the "
            "tokenizer cannot be loaded without its vocabulary"
        )


__all__ = ["check_model_folder", "is_local_path", "load_model_and_processor"]
