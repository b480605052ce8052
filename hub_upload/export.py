"""`export`: a SELF1E model (folder, Hub id or model object) and its processor -> a self-contained Hub folder."""

import copy
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from transformers import AutoTokenizer
from transformers.utils.hub import convert_file_size_to_int

from transformers_self1e.model_folder import check_model_folder, is_local_path
from transformers_self1e.modeling import Self1EConfig, Self1EForSegmentation, Self1EProcessor
from transformers_self1e.modeling.prompts_self1e import CHAT_CONTROL_TOKENS
from transformers_self1e.output_files import check_output_folder

from .folder_check import FolderCheckError, static_problems
from .hub_layout import code_files, config_auto_map
from .model_card import Result, build_model_card, infer_base_model, load_results

CHAT_END_TOKEN = CHAT_CONTROL_TOKENS[1]


def load_processor(source: str | Path, config: Self1EConfig) -> Self1EProcessor:
    """The processor saved in `source` (a folder or a Hub id), or one for `config` built on the tokenizer saved there
    (a converted checkpoint folder may have a tokenizer and no processor)."""
    folder = _local_folder(source, "processor")
    if folder is None:
        return _from_hub(Self1EProcessor, source)
    if not (folder / "processor_config.json").is_file():
        if not (folder / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"{folder} has neither a processor nor a tokenizer: pass --processor")
        return Self1EProcessor.from_model_config(config, AutoTokenizer.from_pretrained(folder))
    return Self1EProcessor.from_pretrained(folder)


def load_model(source: str | Path) -> Self1EForSegmentation:
    """The model of a local folder (checked first with `check_model_folder`, so a folder without a model is named as
    such and never sent to the Hub) or of a Hub id, in its stored dtype."""
    if not is_local_path(source):
        return _from_hub(Self1EForSegmentation, source, dtype="auto")
    check_model_folder(source, check_processor=False)
    return Self1EForSegmentation.from_pretrained(source, dtype="auto")


def _local_folder(source: str | Path, what: str) -> Path | None:
    """The local folder `source` names, or None for a Hub id (see `is_local_path`).

    Raises:
        FileNotFoundError: `source` is a local path, but not of a folder.
    """
    if not is_local_path(source):
        return None
    if not Path(source).is_dir():
        raise FileNotFoundError(f"no {what} folder at {source}")
    return Path(source)


def _from_hub(cls, repo_id: str, **kwargs):
    """`cls.from_pretrained(repo_id)`, an `OSError` of the download (no such repository, no connection) reported as
    the missing input it is."""
    try:
        return cls.from_pretrained(repo_id, **kwargs)
    except OSError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FileNotFoundError(
            f"{repo_id} is not a local folder, and loading it from the Hub failed: {reason}"
        ) from None


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
        overwrite: replace a non-empty `out_dir` (a folder of files only, as an export writes) by the new folder.

    Raises:
        FileExistsError: `out_dir` is a file, or is not empty and `overwrite` is False, or holds a subfolder (which
            an export never writes, e.g. a `.git`): the tool only replaces folders of files.
        FileNotFoundError: `model` or `processor` is neither a local folder holding one nor on the Hub.
        ValueError: `out_dir` cannot be created, a model folder is invalid, `max_shard_size` is not a size, or the
            processor does not fit the model (token ids, tile size, vocabulary).
        FolderCheckError: the written folder is incomplete (a bug, reported before anything is moved into place).
    """
    out_dir = Path(out_dir)
    _check_output_folder(out_dir, overwrite)
    _check_shard_size(max_shard_size)
    if isinstance(results, (str, Path)):
        results = load_results(results)
    if isinstance(processor, (str, Path)):
        _local_folder(processor, "processor")  # checked now rather than once the model has loaded
    if not isinstance(model, Self1EForSegmentation):
        processor = model if processor is None else processor
        model = load_model(model)
    elif processor is None:
        raise ValueError("pass the processor along with a model object")
    if not isinstance(processor, Self1EProcessor):
        processor = load_processor(processor, model.config)
    processor.check_model_config(model.config)

    # Written into a new folder of this call's own next to `out_dir` first, so that a failure never leaves a
    # half-written folder behind and nothing of anyone else's is ever removed.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _new_folder_beside(out_dir, "partial")
    try:
        _write_folder(model, processor, staging, max_shard_size)
        card = build_model_card(
            model.config,
            repo_id=repo_id or f"your-org/{out_dir.name}",
            parameters=model.num_parameters(),
            license=license,
            base_model=base_model or infer_base_model(model.config),
            datasets=datasets,
            results=results or (),
        )
        card.save(staging / "README.md")
        problems = static_problems(staging)
        if problems:
            raise FolderCheckError(staging, problems)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _check_shard_size(max_shard_size: str | int) -> None:
    """Raises ValueError now, rather than once the model has loaded, unless `max_shard_size` is a positive size."""
    try:
        size = convert_file_size_to_int(max_shard_size)
    except (ValueError, AttributeError):
        size = None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(
            f"max_shard_size must be a positive size such as '5GB', '300KB' or bytes, got {max_shard_size!r}"
        )


def _check_output_folder(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file; give a folder to write")
    check_output_folder(out_dir)  # its parent folders can be created and written into
    entries = sorted(out_dir.iterdir()) if out_dir.is_dir() else []
    if entries and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; pass overwrite=True (--overwrite) to replace its contents")
    subfolders = [entry.name for entry in entries if entry.is_dir()]
    if subfolders:
        raise FileExistsError(
            f"{out_dir} holds folders an export does not write ({', '.join(subfolders)}); export into a new folder"
        )


def _new_folder_beside(path: Path, purpose: str) -> Path:
    """A new empty folder next to `path`, created by this call (never an existing one reused)."""
    folder = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{purpose}")
    folder.mkdir()
    return folder


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Renames `staging` to `out_dir`; a non-empty `out_dir` is first moved aside into a folder of this call's own
    and removed only once the new folder is in place (restored if the rename fails)."""
    if not (out_dir.is_dir() and any(out_dir.iterdir())):
        staging.rename(out_dir)  # onto a missing or empty folder
        return
    replaced = _new_folder_beside(out_dir, "replaced")
    out_dir.rename(replaced / out_dir.name)
    try:
        staging.rename(out_dir)
    except OSError:
        (replaced / out_dir.name).rename(out_dir)
        replaced.rmdir()
        raise
    shutil.rmtree(replaced)


def sync_remote_code(folder: str | Path) -> list[str]:
    """Brings the remote-code files of an exported folder up to date with `modeling/`, e.g. the shipped model's after
    an edit of `modeling/`; returns the names of the files it replaced.

    Only the files named like a file of `modeling/` are written, each beside its destination then renamed over it
    (a symbolic link is replaced by a file); nothing else in the folder is touched.

    Raises:
        FileNotFoundError: `folder` has no `config.json`.
        ValueError: `folder` is not a SELF1E Hub folder (its `auto_map` differs), or it holds Python files that are
            not files of `modeling/` (left for a person to remove: this function never deletes a file).
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: not an exported SELF1E folder")
    auto_map = json.loads(config_path.read_text()).get("auto_map", {})
    if any(auto_map.get(auto_class) != reference for auto_class, reference in config_auto_map().items()):
        raise ValueError(f"{config_path} does not have the auto_map of a SELF1E Hub folder: not refreshing its code")
    sources = {source.name: source for source in code_files()}
    unknown = sorted(path.name for path in folder.glob("*.py") if path.name not in sources)
    if unknown:
        raise ValueError(f"{folder} has Python files that are not in modeling/: {', '.join(unknown)}; remove them")
    replaced = []
    for name, source in sources.items():
        target = folder / name
        if target.is_file() and not target.is_symlink() and target.read_bytes() == source.read_bytes():
            continue
        descriptor, partial = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        os.close(descriptor)
        try:
            shutil.copyfile(source, partial)
            shutil.copymode(source, partial)
            os.replace(partial, target)
        finally:
            Path(partial).unlink(missing_ok=True)
        replaced.append(name)
    return replaced


def _write_folder(
    model: Self1EForSegmentation, processor: Self1EProcessor, folder: Path, max_shard_size: str | int
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
        shutil.copyfile(source, folder / source.name)

    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **config_auto_map()}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = ["export_hub_folder", "load_model", "load_processor", "sync_remote_code"]
