"""Image processor of SELF1E: InternVL's dynamic tiling (transformers' GOT-OCR2 tiling) plus robust input loading."""

import contextlib
import os
import urllib.parse
import urllib.request

import numpy as np
import PIL.Image
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    make_flat_list_of_images,
)
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)
from transformers.processing_utils import ImagesKwargs
from transformers.utils import TensorType

from .mask_postprocessing import check_finite_mask_logits, resize_mask_logits, threshold_logit

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# Far above the tile counts InternVL models are used with; the grid search is quadratic in it.
MAX_TILES_LIMIT = 256
_SIXTEEN_BIT_PIL_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# Channels an array image may have: gray, gray + alpha, RGB, RGBA.
_CHANNEL_COUNTS = (1, 2, 3, 4)
# Channels of the channels-first images in use (gray, RGB); beside 1 to 4 entries on the last axis, the shape alone
# does not tell the layout.
_CHANNELS_FIRST_COUNTS = (1, 3)


class Self1EImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    min_tiles (`int`, *optional*, defaults to `self.min_tiles`):
        Fewest tiles an image is cut into.
    max_tiles (`int`, *optional*, defaults to `self.max_tiles`):
        Most tiles an image is cut into (thumbnail not counted), at most 256. `1` resizes the whole image to one tile.
    use_thumbnail (`bool`, *optional*, defaults to `self.use_thumbnail`):
        Append the whole image resized to one tile after the grid tiles of images cut into several tiles.
    max_image_pixels (`int`, *optional*, defaults to `self.max_image_pixels`):
        Images with more pixels (height x width) are rejected with a `ValueError`; `None` disables the check.
    """

    min_tiles: int
    max_tiles: int
    use_thumbnail: bool
    max_image_pixels: int | None


class Self1EImageProcessor(GotOcr2ImageProcessorPil):
    r"""
    Cuts images into square tiles the way InternVL does (`dynamic_preprocess`), through transformers' GOT-OCR2 tiling
    (`get_optimal_tiled_canvas`, `crop_image_to_patches`), which implements the same closest-aspect-ratio rule: among
    the `(cols, rows)` grids with `min_tiles <= cols * rows <= max_tiles`, the one whose aspect ratio is closest to the
    image's, ties going to the larger grid while the image area exceeds half the grid area. The image is resized
    (bicubic, PIL, as the reference) to the grid and cut into tiles in raster order, row by row. The default,
    `max_tiles=1`, resizes the whole image to one tile, as the released SELF1E checkpoints do.

    Returned per image, besides `pixel_values` of shape `(total_tiles, 3, tile_size, tile_size)`:

    - `tile_grids` `(num_images, 2)`: the grid as **(rows, cols)** (InternVL's aspect-ratio code speaks (cols, rows)).
    - `num_tiles` `(num_images,)`: tiles of the image in `pixel_values`, thumbnail included.
    - `has_thumbnail` `(num_images,)`: whether the image's last tile is a thumbnail (only with `use_thumbnail=True` and
      more than one grid tile).
    - `original_sizes` `(num_images, 2)`: `(height, width)` of the input image, to resize masks back.

    A thumbnail gets its own `image_tokens_per_tile` image tokens in the prompt (it is an ordinary tile for the vision
    tower and the language model), but it is **not** part of the stitched mask canvas: the canvas is the
    `rows x cols` grid tiles only, and the model must skip the thumbnail tile (the last of the image's `num_tiles`).

    Inputs may be PIL images of any mode, numpy arrays and torch tensors (`HxW`, `HxWxC` or `CxHxW`, 4D batches split
    into images; `uint8`, `uint16`, `bool`, other integers within [0, 255], floats within [0, 1]), local paths and
    `file://` URLs. Arrays and tensors follow one layout rule: channels are last when the last axis has 1 to 4 entries,
    first when the first axis has 1 to 4 entries and the last does not; a shape whose first axis has 1 or 3 entries
    and whose last has 1 to 4 (e.g. `(3, 64, 3)`) is ambiguous and refused unless `input_data_format`
    (`"channels_last"` or `"channels_first"`) says the layout. Alpha channels are dropped as `PIL.Image.convert("RGB")`
    does (what the reference implementation did), 16-bit images are scaled to 8 bits (`v / 257`, rounded).
    """

    valid_kwargs = Self1EImageProcessorKwargs
    model_input_names = ["pixel_values", "tile_grids"]

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 448, "width": 448}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    min_tiles = 1
    max_tiles = 1
    use_thumbnail = False
    max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        _check_tile_range(self.min_tiles, self.max_tiles)
        _check_max_image_pixels(self.max_image_pixels)

    @classmethod
    def from_model_config(cls, config, **kwargs) -> "Self1EImageProcessor":
        """An image processor whose tile size is `config.tile_size` (a `Self1EConfig`)."""
        kwargs.setdefault("size", {"height": int(config.tile_size), "width": int(config.tile_size)})
        return cls(**kwargs)

    @property
    def tile_size(self) -> int:
        return int(self.size.height)

    # ----------------------------------------------------------------------------------------------------------
    # Input loading
    # ----------------------------------------------------------------------------------------------------------

    def fetch_images(self, image_url_or_urls, name: str = "images"):
        """
        Turns every image of a (nested) list into an RGB `PIL.Image.Image`: PIL images of any mode, numpy arrays, torch
        tensors, local paths and `file://` URLs. Anything else raises a `TypeError` naming `name` and the type.
        """
        return self.load_images(image_url_or_urls, self.max_image_pixels, name=name)

    def load_images(
        self,
        images,
        max_image_pixels: int | None,
        input_data_format: "ChannelDimension | str | None" = None,
        name: str = "images",
    ):
        """
        [`~Self1EImageProcessor.fetch_images`] with an explicit `max_image_pixels` (`None`: no limit), checked before
        a file is decoded, and the layout of arrays and tensors (`input_data_format`; `None` reads it from the shape).
        """
        _check_max_image_pixels(max_image_pixels)
        return _load_images(images, name, max_image_pixels, _channel_dimension(input_data_format))

    def preprocess(self, images, *args, **kwargs) -> BatchFeature:
        """The base class's `preprocess`; an option of the wrong type raises a `TypeError` naming it."""
        with option_type_errors():
            return super().preprocess(images, *args, **kwargs)

    def _prepare_image_like_inputs(self, images, *args, expected_ndims: int = 3, **kwargs) -> list[np.ndarray]:
        # The base class loads images with `fetch_images`, which knows neither this call's limit nor its layout.
        max_image_pixels = kwargs.get("max_image_pixels", self.max_image_pixels)
        loaded = self.load_images(images, max_image_pixels, kwargs.get("input_data_format"))
        flat = make_flat_list_of_images(loaded, expected_ndims=expected_ndims)
        return [self.process_image(image, *args, **kwargs) for image in flat]

    def convert_to_rgb(self, image, input_data_format=None) -> np.ndarray:
        """RGB `HxWx3` uint8 array; alpha is dropped (as the reference's `convert("RGB")`), not blended onto white."""
        if isinstance(image, PIL.Image.Image):
            return np.array(_pil_to_rgb(image, "image"))
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    # ----------------------------------------------------------------------------------------------------------
    # Tiling
    # ----------------------------------------------------------------------------------------------------------

    def get_tile_grid(self, height: int, width: int, min_tiles: int | None = None, max_tiles: int | None = None):
        """`(rows, cols)` of the tile grid an image of `height x width` is cut into (thumbnail not counted)."""
        min_tiles = self.min_tiles if min_tiles is None else min_tiles
        max_tiles = self.max_tiles if max_tiles is None else max_tiles
        _check_tile_range(min_tiles, max_tiles)
        cols, rows = get_optimal_tiled_canvas(
            (height, width), (self.size.height, self.size.width), min_tiles, max_tiles
        )
        return rows, cols

    def get_number_of_image_patches(self, height: int, width: int, images_kwargs: dict | None = None) -> int:
        """Tiles (thumbnail included) an image of `height x width` takes in `pixel_values`."""
        images_kwargs = images_kwargs or {}
        rows, cols = self.get_tile_grid(height, width, images_kwargs.get("min_tiles"), images_kwargs.get("max_tiles"))
        use_thumbnail = images_kwargs.get("use_thumbnail", self.use_thumbnail)
        return rows * cols + int(bool(use_thumbnail) and rows * cols > 1)

    def _preprocess(
        self,
        images: list[np.ndarray],
        size: SizeDict,
        resample: "PILImageResampling | None",
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | None,
        image_std: float | list[float] | None,
        return_tensors: str | TensorType | None,
        min_tiles: int = 1,
        max_tiles: int = 1,
        use_thumbnail: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        **kwargs,
    ) -> BatchFeature:
        if kwargs.get("do_resize") is False:
            raise ValueError("do_resize=False is not supported: tiling always resizes images to the tile grid")
        _check_tile_range(min_tiles, max_tiles)
        _check_max_image_pixels(max_image_pixels)
        pixel_values, tile_grids, num_tiles, has_thumbnail, original_sizes = [], [], [], [], []
        for index, image in enumerate(images):
            height, width = (int(side) for side in image.shape[-2:])
            _check_image_size(height, width, max_image_pixels, f"images[{index}]")
            cols, rows = get_optimal_tiled_canvas((height, width), (size.height, size.width), min_tiles, max_tiles)
            if not min_tiles <= rows * cols <= max_tiles:
                raise ValueError(
                    f"images[{index}] would be cut into {rows}x{cols} tiles, outside min_tiles={min_tiles} and "
                    f"max_tiles={max_tiles}"
                )
            # GOT-OCR2's tiling, same rule as InternVL: resize to the grid, cut row by row, thumbnail last.
            tiles = self.crop_image_to_patches(
                image, min_tiles, max_tiles, use_thumbnail=use_thumbnail, patch_size=size, resample=resample
            )
            thumbnail = bool(use_thumbnail) and rows * cols > 1
            if len(tiles) != rows * cols + thumbnail:
                raise RuntimeError(
                    f"tiling returned {len(tiles)} tiles for a {rows}x{cols} grid (thumbnail={thumbnail})"
                )
            for tile in tiles:
                if do_rescale:
                    tile = self.rescale(tile, rescale_factor)
                if do_normalize:
                    tile = self.normalize(tile, image_mean, image_std)
                pixel_values.append(tile.astype(np.float32, copy=False))
            tile_grids.append([rows, cols])
            num_tiles.append(len(tiles))
            has_thumbnail.append(thumbnail)
            original_sizes.append([height, width])

        data = {
            "pixel_values": np.stack(pixel_values) if return_tensors else pixel_values,
            "tile_grids": tile_grids,
            "num_tiles": num_tiles,
            "has_thumbnail": has_thumbnail,
            "original_sizes": original_sizes,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ----------------------------------------------------------------------------------------------------------
    # Post-processing
    # ----------------------------------------------------------------------------------------------------------

    def post_process_masks(
        self,
        pred_masks: "list[torch.Tensor]",
        original_sizes: "torch.Tensor | list[tuple[int, int]]",
        threshold: float | None = 0.5,
    ) -> "list[torch.Tensor]":
        """
        Resizes mask logits on the stitched tile canvas back to the input images. The canvas covers the whole image
        (the image was resized to the tile grid), so it is resized straight to the original size, bilinearly
        (`align_corners=False`, `resize_mask_logits`). For many masks, `logits_to_prediction` (in
        `mask_postprocessing`, as both) bounds the memory and also scores the masks.

        Args:
            pred_masks (`list[torch.Tensor]`):
                Per sample (row of the batch), its `(num_masks, height, width)` mask logits: the model's
                `pred_masks`.
            original_sizes (`torch.Tensor` or `list[tuple[int, int]]`):
                Per sample, the `(height, width)` of its image (`original_sizes[prompt_to_image]` when the processor
                made one sample per prompt of an image).
            threshold (`float` or `None`, *optional*, defaults to 0.5):
                Probability above which a pixel is inside a mask (`sigmoid(logit) > threshold`; 0.5 is `logit > 0`),
                strictly between 0 and 1, as in `segment()`. `None` returns the resized logits instead of masks.

        Returns:
            `list[torch.Tensor]`: per sample, `(num_masks, *original_size)` boolean masks, or float32 logits when
            `threshold` is `None`.

        Raises:
            ValueError: a sample's logits hold NaN or infinity (thresholded, they would read as empty masks),
                `original_sizes` does not have one entry per sample, or `threshold` is not a probability.
        """
        sizes = original_sizes.tolist() if isinstance(original_sizes, torch.Tensor) else list(original_sizes)
        if len(sizes) != len(pred_masks):
            raise ValueError(f"original_sizes has {len(sizes)} entries for {len(pred_masks)} samples of pred_masks")
        logit_threshold = None if threshold is None else threshold_logit(threshold)
        results = []
        for logits, (height, width) in zip(pred_masks, sizes):
            check_finite_mask_logits(logits)
            resized = resize_mask_logits(logits.float(), (int(height), int(width)))
            results.append(resized if logit_threshold is None else resized > logit_threshold)
        return results


# ----------------------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------------------


def _check_tile_range(min_tiles, max_tiles) -> None:
    for name, value in (("min_tiles", min_tiles), ("max_tiles", max_tiles)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if value > MAX_TILES_LIMIT:
            raise ValueError(f"{name}={value} is more than the {MAX_TILES_LIMIT} tiles an image may be cut into")
    if min_tiles > max_tiles:
        raise ValueError(f"min_tiles={min_tiles} asks for more tiles than max_tiles={max_tiles} allows")


def _check_max_image_pixels(max_image_pixels) -> None:
    if max_image_pixels is not None and (
        isinstance(max_image_pixels, bool)
        or not isinstance(max_image_pixels, (int, np.integer))
        or max_image_pixels < 1
    ):
        raise ValueError(f"max_image_pixels must be a positive integer or None, got {max_image_pixels!r}")


def _check_image_size(height: int, width: int, max_image_pixels: int | None, name: str) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"{name} is empty: {height}x{width} pixels (height x width)")
    if max_image_pixels is not None and height * width > max_image_pixels:
        raise ValueError(
            f"{name} has {height}x{width} = {height * width} pixels, more than max_image_pixels={max_image_pixels}; "
            "downscale it first or raise max_image_pixels"
        )


# ----------------------------------------------------------------------------------------------------------
# Input conversion: everything becomes an RGB PIL image (8 bits per channel)
# ----------------------------------------------------------------------------------------------------------


def _channel_dimension(input_data_format) -> ChannelDimension | None:
    if input_data_format is None:
        return None
    if input_data_format not in (ChannelDimension.FIRST.value, ChannelDimension.LAST.value):
        raise ValueError(f"input_data_format must be 'channels_first' or 'channels_last', got {input_data_format!r}")
    return ChannelDimension(input_data_format)


def _load_images(images, name: str, max_image_pixels: int | None, channel_dim: ChannelDimension | None = None):
    if isinstance(images, (list, tuple)):
        loaded = []
        for index, image in enumerate(images):
            item = _load_images(image, f"{name}[{index}]", max_image_pixels, channel_dim)
            # A 4D array/tensor (a batch) becomes several images.
            if isinstance(item, list) and not isinstance(image, (list, tuple)):
                loaded.extend(item)
            else:
                loaded.append(item)
        return loaded
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return [
            _load_image(images[index], f"{name}[{index}]", max_image_pixels, channel_dim)
            for index in range(images.shape[0])
        ]
    return _load_image(images, name, max_image_pixels, channel_dim)


def _load_image(
    image, name: str, max_image_pixels: int | None, channel_dim: ChannelDimension | None = None
) -> PIL.Image.Image:
    if isinstance(image, PIL.Image.Image):
        _check_image_size(image.height, image.width, max_image_pixels, name)
        _decode(image, name)
        return _pil_to_rgb(image, name)
    if isinstance(image, torch.Tensor):
        return _array_to_rgb(_tensor_to_numpy(image, name), name, max_image_pixels, channel_dim)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, name, max_image_pixels, channel_dim)
    if isinstance(image, (str, os.PathLike)):
        return _open_image_file(image, name, max_image_pixels)
    raise TypeError(
        f"{name} has unsupported type {type(image).__module__}.{type(image).__qualname__}; expected a "
        "PIL.Image.Image, numpy.ndarray, torch.Tensor, a local file path or a file:// URL"
    )


def _pil_to_rgb(image: PIL.Image.Image, name: str) -> PIL.Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_PIL_MODES or image.mode in ("I", "F"):
        # Pillow clips these to 8 bits instead of scaling them; convert through numpy.
        array = np.asarray(image)
        if image.mode == "F" and array.size and np.isfinite(array).all() and array.max() > 1.0:
            array = np.clip(array, 0.0, 255.0) / 255.0  # 0-255 floats, as PIL's own "F" conversions produce
        elif image.mode == "I" and array.size and array.min() >= 0 and array.max() <= 255:
            array = array.astype(np.uint8)
        elif image.mode == "I" and array.size and array.min() >= 0 and array.max() <= 65535:
            array = array.astype(np.uint16)
        return PIL.Image.fromarray(_to_uint8(array, name)).convert("RGB")
    try:
        # Drops the alpha channel (RGBA, LA, PA) and maps palettes (P), CMYK, YCbCr... as the reference does.
        return image.convert("RGB")
    except ValueError:
        return image.convert("RGBA").convert("RGB")


def _tensor_to_numpy(tensor: torch.Tensor, name: str) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    if tensor.is_complex():
        raise TypeError(f"{name} is a complex torch.Tensor ({tensor.dtype}); expected uint8, integer, bool or float")
    return tensor.numpy()


def _channel_axis(shape: tuple[int, ...], name: str, channel_dim: ChannelDimension | None) -> int:
    """The channel axis (0 or -1) of a 3-D image: `channel_dim` when given, else the one reading of the shape."""
    if channel_dim is not None:
        axis = -1 if channel_dim == ChannelDimension.LAST else 0
        if shape[axis] not in _CHANNEL_COUNTS:
            raise ValueError(
                f"{name} has shape {shape}: input_data_format={channel_dim.value!r} puts {shape[axis]} channels on "
                "that axis, expected 1 to 4"
            )
        return axis
    if shape[-1] in _CHANNEL_COUNTS and shape[0] in _CHANNELS_FIRST_COUNTS:
        raise ValueError(
            f"{name} has shape {shape}: its first and last axes could both hold the channels; pass "
            "input_data_format='channels_last' (height, width, channels) or 'channels_first' (channels, height, "
            "width), or a PIL image"
        )
    if shape[-1] in _CHANNEL_COUNTS:
        return -1
    if shape[0] in _CHANNEL_COUNTS:
        return 0
    raise ValueError(f"{name} has shape {shape}: no axis of 1 to 4 channels at the start or the end")


def _array_to_rgb(
    array: np.ndarray, name: str, max_image_pixels: int | None, channel_dim: ChannelDimension | None = None
) -> PIL.Image.Image:
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3:
        if _channel_axis(tuple(array.shape), name, channel_dim) == 0:
            array = np.moveaxis(array, 0, -1)
    else:
        raise ValueError(f"{name} must have 2 (HxW) or 3 (HxWxC or CxHxW) dimensions, got shape {tuple(array.shape)}")
    _check_image_size(int(array.shape[0]), int(array.shape[1]), max_image_pixels, name)
    array = _to_uint8(array, name)
    channels = array.shape[-1]
    if channels in (1, 2):  # gray (+ alpha, dropped)
        array = np.repeat(array[..., :1], 3, axis=-1)
    elif channels == 4:  # RGBA: alpha dropped, like PIL's convert("RGB")
        array = array[..., :3]
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    dtype = array.dtype
    if dtype == np.uint8:
        return array
    if dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if dtype.kind == "u" and dtype.itemsize == 2:  # 16 bits, any byte order
        return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    if dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                f"{name} has integer values in [{array.min()}, {array.max()}]; 8-bit images must lie in [0, 255] "
                "(pass 16-bit images as uint16)"
            )
        return array.astype(np.uint8)
    if dtype.kind == "f":
        if array.size and not np.isfinite(array).all():
            raise ValueError(f"{name} has NaN or infinite values")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(
                f"{name} has float values in [{array.min()}, {array.max()}]; float images must lie in [0, 1]"
            )
        return np.round(array.astype(np.float64) * 255.0).astype(np.uint8)
    raise TypeError(f"{name} has unsupported dtype {dtype}; expected uint8, uint16, bool, integers or floats")


def _open_image_file(source, name: str, max_image_pixels: int | None) -> PIL.Image.Image:
    path = os.fspath(source)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    scheme = urllib.parse.urlparse(path).scheme.lower() if "://" in path or path.startswith("file:") else ""
    if scheme == "file":
        parsed = urllib.parse.urlparse(path)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{name}: only local file:// URLs are supported, got host {parsed.netloc!r}")
        path = urllib.request.url2pathname(parsed.path)
    elif scheme:
        raise ValueError(
            f"{name}: {scheme}:// URLs are not fetched; download the image and pass a local path or a PIL image"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: no image file at {path!r}")
    try:
        with PIL.Image.open(path) as image:
            # The header gives the size: refuse huge images before decoding them.
            _check_image_size(image.height, image.width, max_image_pixels, name)
            _decode(image, name)
            rgb = _pil_to_rgb(image, name)
            return rgb.copy() if rgb is image else rgb
    except PIL.Image.DecompressionBombError as error:
        # Pillow's own guard, which max_image_pixels (already passed) does not override.
        raise ValueError(
            f"{name} ({path!r}) is larger than Pillow opens (PIL.Image.MAX_IMAGE_PIXELS={PIL.Image.MAX_IMAGE_PIXELS}, "
            f"a guard against decompression bombs): {error}"
        ) from error
    except PIL.UnidentifiedImageError as error:
        raise ValueError(f"{name}: {path!r} is not an image PIL can read") from error


def _decode(image: PIL.Image.Image, name: str) -> None:
    """Decodes an image PIL opened lazily (a no-op once decoded); a truncated or corrupt file is a ValueError."""
    try:
        image.load()
    except OSError as error:  # the header was fine, the pixel data is not
        source = getattr(image, "filename", "") or "the image"
        raise ValueError(f"{name}: {source} cannot be decoded (a truncated or corrupt file?): {error}") from None


@contextlib.contextmanager
def option_type_errors():
    """transformers checks the types of keyword options with huggingface_hub's strict dataclasses; their error is
    raised as the `TypeError` it reports, the exception callers catch for a wrong argument type."""
    try:
        yield
    except StrictDataclassError as error:
        raise TypeError(str(error)) from None


__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "MAX_TILES_LIMIT", "Self1EImageProcessor", "Self1EImageProcessorKwargs"]
