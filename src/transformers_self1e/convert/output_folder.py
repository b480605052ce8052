"""The folder a conversion writes to: checked before any weight is read, filled through a staging folder.

A conversion never deletes or overwrites a file it did not write. It refuses a non-empty output folder unless asked to
overwrite, and then replaces only the files it writes itself; everything is first written into a staging folder
created beside the output and renamed into place at the end, so a failed conversion leaves the output as it was.
"""

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..modeling import Self1EConfig, Self1EProcessor
from .checkpoint_files import SAFETENSORS_INDEX, SAFETENSORS_WEIGHTS

# Files `from_pretrained` of a processor or tokenizer reads.
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
)


def check_output_folder(
    out_dir: str | Path,
    inputs: Iterable[str | Path],
    weight_files: list[str],
    overwrite: bool = False,
    config: Self1EConfig | None = None,
) -> None:
    """Checks that a converted model can be written to `out_dir`; meant to run before any weight is read.

    Args:
        out_dir: the output folder; it may be missing (it is created, with its parents) or empty.
        inputs: the files and folders the conversion reads; none may be `out_dir` or lie inside it.
        weight_files: names of the weight files (and index) the conversion writes.
        overwrite: whether a non-empty `out_dir` may receive the conversion's files (other files are kept).
        config: the converted model's config when the conversion writes no processor: processor files kept in
            `out_dir` must fit it.

    Raises:
        ValueError: `out_dir` holds an input, is a file or lies below one, keeps weight files that `from_pretrained`
            could load instead of the new ones, or keeps processor files that do not fit `config`.
        FileExistsError: `out_dir` is not empty and `overwrite` is false.
        PermissionError: the folders to write to are not writable.
    """
    out = Path(out_dir).resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == out or out in source.parents:
            raise ValueError(f"the output folder {out} holds the input {source}: write the converted model elsewhere")
    _check_writable(out)
    existing = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(
            f"{out} is not empty: choose a new folder, or pass --overwrite (overwrite=True) to replace the converted "
            "model's files in it (other files are kept)"
        )
    entry_points = (SAFETENSORS_WEIGHTS, SAFETENSORS_INDEX)
    stale = [name for name in entry_points if name in existing and name not in weight_files]
    if stale:
        raise ValueError(
            f"{out} holds {', '.join(stale)}, which the conversion does not replace (it writes "
            f"{', '.join(weight_files)}): from_pretrained could load the old weights; move them away first"
        )
    kept_processor_files = [name for name in existing if name in PROCESSOR_FILES]
    if config is not None and kept_processor_files:
        try:
            Self1EProcessor.from_pretrained(out).check_model_config(config)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"{out} holds processor files ({', '.join(kept_processor_files)}) that do not fit the converted "
                f"model; move them away or choose a new folder. {error}"
            ) from None


def _check_writable(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file, not a folder")
    existing_parent = out.parent
    while not existing_parent.exists():
        existing_parent = existing_parent.parent
    if not existing_parent.is_dir():
        raise ValueError(f"cannot create the output folder {out}: {existing_parent} is a file")
    # The staging folder is made beside the output, and the files are then renamed into the output.
    for folder in [existing_parent] + ([out] if out.is_dir() else []):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write to {folder}, needed to write the converted model to {out}")


@contextmanager
def staged_output(out_dir: str | Path) -> Iterator[Path]:
    """Yields a new empty folder beside `out_dir` to write into; when the block succeeds, its files are renamed into
    `out_dir` (created if missing), replacing files of the same names. The staging folder is always removed."""
    out = Path(out_dir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.converting-"))
    try:
        yield staging
        out.mkdir(exist_ok=True)
        for produced in sorted(staging.iterdir()):
            os.replace(produced, out / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["PROCESSOR_FILES", "check_output_folder", "staged_output"]
