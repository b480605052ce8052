"""Output files of the command line: every path is checked before any work starts, and every file is written beside
its destination and renamed into place, so a failure leaves no half-written file behind."""

import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

import PIL.Image


def check_output_files(outputs: Iterable[str | Path], inputs: Iterable[str | Path] = (), suffix: str = ".png"):
    """Raises ValueError now for an output file that could not be written later.

    Each output must end with `suffix`, must not be a folder, an input or another output, and its folder must exist
    or be creatable.
    """
    seen = {Path(path).resolve(): str(path) for path in inputs}
    for output in outputs:
        path = Path(output)
        if path.is_dir():
            raise ValueError(f"{output} is a folder; give a file name")
        if path.suffix.lower() != suffix:
            raise ValueError(f"{output} must be a {suffix} file")
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(f"{output} would overwrite {seen[resolved]}; give another output file")
        seen[resolved] = f"another output ({output})"
        _check_can_create(path.parent)


def check_output_folder(folder: str | Path) -> None:
    """Raises ValueError now if `folder` is a file or cannot be created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    _check_can_create(folder)


def save_image(image: PIL.Image.Image, path: str | Path) -> Path:
    """Writes `image` as a PNG at `path` atomically: to a temporary file beside it, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        image.save(partial, format="PNG")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def safe_file_name(text: str, max_length: int = 60) -> str:
    """`text` as a file name stem: lower case, runs of anything but letters and digits turned into one "-"."""
    return re.sub(r"[\W_]+", "-", text.lower()).strip("-")[:max_length].rstrip("-")


def _check_can_create(folder: Path) -> None:
    """Raises ValueError unless `folder`, or its nearest existing ancestor, is a writable folder."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot create the folder {folder}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write into {existing}: it is not writable")


__all__ = ["check_output_files", "check_output_folder", "safe_file_name", "save_image"]
