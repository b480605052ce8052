"""Input images of the command line: each is decoded in full before any work starts, so that a folder, a file that is
not an image, a truncated or corrupt file, or one too large to decode is one error naming the file, not a traceback
from PIL (which opens lazily and would fail only later, deep inside the processor)."""

import warnings
from pathlib import Path

import PIL.Image

from .modeling.image_processing_self1e import DEFAULT_MAX_IMAGE_PIXELS


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> PIL.Image.Image:
    """The image at `path`, decoded.

    Args:
        path: an image file PIL can read.
        max_pixels: the most pixels the image may have (the image processor's default limit); checked from the
            file's header, before decoding. `None` leaves only PIL's own decompression-bomb limit.

    Raises:
        FileNotFoundError: nothing is at `path`.
        ValueError: `path` is a folder, not an image, truncated or corrupt, or larger than `max_pixels`.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        with warnings.catch_warnings():
            # The size is checked below, with a message of its own; PIL's warning would only add a second one.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            image = PIL.Image.open(path)
    except PIL.UnidentifiedImageError:
        raise ValueError(f"{path} is not an image file PIL can read") from None
    except PIL.Image.DecompressionBombError as error:
        raise ValueError(f"{path} is too large to decode safely: {error}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable image: {error}") from None
    with image:
        pixels = image.width * image.height
        if max_pixels is not None and pixels > max_pixels:
            raise ValueError(
                f"{path} is {image.width}x{image.height} = {pixels} pixels, more than the {max_pixels} an image may "
                "have: downscale it first"
            )
        try:
            image.load()
        except (OSError, ValueError) as error:
            raise ValueError(f"{path} cannot be decoded (a truncated or corrupt file?): {error}") from None
        # A decoded copy: closing the opened file leaves it usable.
        return image.copy()


__all__ = ["read_image"]
