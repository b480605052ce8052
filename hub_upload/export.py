"""`export`: a SELF1E model (folder, Hub id or model object) and its processor -> a self-contained Hub folder."""

import copy
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer

from transformers_self1e.modeling import Self1EConfig, Self1EForSegmentation, Self1EProcessor

from .folder_check import FolderCheckError, static_problems
from .hub_layout import PIPELINE_TASK, code_files, config_auto_map, custom_pipelines
from .model_card import Result, build_model_card, infer_base_model, load_results

CHAT_END_TOKEN = "<|im_end|>"


def load_processor(source: str | Path, config: Self1EConfig) -> Self1EProcessor:
    """The processor saved in `source`, or one for `config` built on the tokenizer saved there (a converted
    checkpoint folder may have a tokenizer and no processor)."""
    folder = Path(source)
    if folder.is_dir() and not (folder / "processor_config.json").is_file():
        if not (folder / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{folder} has neither a processor nor a tokenizer: pass --processor")
        return Self1EProcessor.from_model_config(config, AutoTokenizer.from_pretrained(folder))
    return Self1EProcessor.from_pretrained(source)


def export_hub_folder(
    model: str | Path | Self1EForSegmentation,
    out_dir: str | Path,
    processor: str | Path | Self1EProcessor | None = None,
    max_shard_size: str | int = "5GB",
    results: str | Path | Sequence[Result] | None = None,
    base_model: str | None = None,
    license: str = "apache-2.0",
    datasets: Sequence[str] = (),
    repo_id: str | None = None,
    overwrite: bool = False,
    link_code: bool = False,
) -> Path:
    """Writes everything a Hub repository of the model needs into `out_dir`.

    Args:
        model: a `Self1EForSegmentation`, or a folder / Hub id it loads from (in its stored dtype).
        out_dir: the folder to create; it must not exist or be empty, unless `overwrite`.
        processor: the `Self1EProcessor`, or a folder holding one or just a tokenizer; defaults to `model`'s folder.
        max_shard_size: largest weight file (`save_pretrained`'s argument).
        results: evaluation results (a JSON file, see `model_card.load_results`) for the card's table.
        base_model: Hub id of the base model for the card; inferred from the architecture for InternVL3 sizes.
        license: the card's license identifier.
        datasets: Hub ids of the training datasets, for the card's metadata.
        repo_id: the repository the folder is meant for, used in the card's snippets.
        overwrite: replace the contents of a non-empty `out_dir`.
        link_code: write the remote-code files as relative symbolic links to this checkout's `modeling/` instead of
            copies, for a folder kept inside the repository (the shipped model): one source of truth, and copying
            the folder (`shutil.copytree`, `cp -L`) still gives real files.

    Raises:
        FileExistsError: `out_dir` is not empty and `overwrite` is False.
        ValueError: the processor does not fit the model (token ids, tile size, vocabulary).
        FolderCheckError: the written folder is incomplete (a bug, reported before anything is moved into place).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True (--overwrite) to replace its contents")
    if isinstance(results, (str, Path)):
        results = load_results(results)
    if not isinstance(model, Self1EForSegmentation):
        processor = model if processor is None else processor
        model = Self1EForSegmentation.from_pretrained(model, dtype="auto")
    elif processor is None:
        raise ValueError("pass the processor along with a model object")
    if not isinstance(processor, Self1EProcessor):
        processor = load_processor(processor, model.config)
    processor.check_model_config(model.config)

    # Written next to `out_dir` first, so that a failure never leaves a half-written folder behind.
    staging = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _write_folder(model, processor, staging, max_shard_size, link_code)
        card = build_model_card(
            model.config,
            repo_id=repo_id or f"your-org/{out_dir.name}",
            parameters=model.num_parameters(),
            license=license,
            base_model=base_model or infer_base_model(model.config),
            datasets=datasets,
            results=results or (),
            has_pipeline=PIPELINE_TASK in custom_pipelines(),
        )
        card.save(staging / "README.md")
        problems = static_problems(staging)
        if problems:
            raise FolderCheckError(staging, problems)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_folder(
    model: Self1EForSegmentation,
    processor: Self1EProcessor,
    folder: Path,
    max_shard_size: str | int,
    link_code: bool = False,
) -> None:
    # Weights under the model's own module names, as the converters write them, rather than transformers' reverse
    # mapping to the pre-v5 InternVL layout (`model.language_model.model.*`).
    model.save_pretrained(folder, max_shard_size=max_shard_size, save_original_format=False)
    processor.save_pretrained(folder)

    # Generation stops at the end of the assistant turn, as in the chat template.
    generation_config = copy.deepcopy(model.generation_config)
    tokenizer = processor.tokenizer
    if CHAT_END_TOKEN in tokenizer.get_vocab():
        generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(CHAT_END_TOKEN)
    if tokenizer.pad_token_id is not None:
        generation_config.pad_token_id = tokenizer.pad_token_id
    generation_config.save_pretrained(folder)

    # `save_pretrained` copied the remote code that the saved classes import; the product is all of `modeling/`,
    # byte for byte.
    for stale in folder.glob("*.py"):
        stale.unlink()
    for source in code_files():
        if link_code:
            # `folder` is a sibling of the final folder, so the relative link stays right after the rename.
            (folder / source.name).symlink_to(os.path.relpath(source, folder.resolve()))
        else:
            shutil.copyfile(source, folder / source.name)

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **config_auto_map()}
    pipelines = custom_pipelines()
    if pipelines:
        config["custom_pipelines"] = pipelines
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = ["export_hub_folder", "load_processor"]
