"""The shipped examples: synthetic images with a sentence and a ground-truth mask each, segmented by `self1e demo`.

`assets/examples/examples.json` lists them (`name`, `image`, `prompt`, `gt`, and the synthetic `seed`/`index` that
made them); `write_demo_examples` regenerates the folder, `run_demo` writes a mask and an overlay PNG per example and
a contact sheet of them all, and returns each example's IoU with the ground truth.
"""

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .input_files import read_image
from .modeling import Self1EForSegmentation, Self1EProcessor
from .output_files import check_output_files, check_output_folder, save_image
from .visualize import SheetRow, contact_sheet, draw_overlay

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_MODEL = ASSETS / "self1e-tiny-synthetic"
DEMO_EXAMPLES = ASSETS / "examples"
DEMO_SHEET = "demo.png"
# One example of each expression kind and target size the synthetic data has, in this order.
DEMO_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("attribute", "regular"),
    ("position", "regular"),
    ("size", "small"),
    ("attribute", "thin"),
    ("position", "small"),
    ("no_target", "none"),
)


@dataclass(frozen=True)
class DemoExample:
    """One shipped example; `image` and `gt` are file names inside the examples folder."""

    name: str
    image: str
    prompt: str
    gt: str
    seed: int
    index: int


def load_demo_examples(folder: str | Path = DEMO_EXAMPLES) -> list[DemoExample]:
    """The examples listed in `folder/examples.json`.

    Raises:
        FileNotFoundError: `folder` has no `examples.json`.
        ValueError: `examples.json` is not a non-empty JSON list of objects with the fields of `DemoExample`.
    """
    listing = Path(folder) / "examples.json"
    if not listing.is_file():
        raise FileNotFoundError(f"no examples.json in {folder}")
    try:
        entries = json.loads(listing.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{listing} is not valid JSON: {error}") from None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{listing} must hold a non-empty JSON list of examples")
    types = {field.name: field.type for field in fields(DemoExample)}
    for index, entry in enumerate(entries):
        if not (
            isinstance(entry, dict)
            and set(entry) == set(types)
            and all(isinstance(entry[name], kind) for name, kind in types.items())
        ):
            keys = ", ".join(f"{name} ({kind.__name__})" for name, kind in types.items())
            raise ValueError(f"example {index} of {listing} must be an object with the keys {keys}")
    return [DemoExample(**entry) for entry in entries]


def write_demo_examples(folder: str | Path, seed: int, image_size: int) -> list[DemoExample]:
    """Write one synthetic sample of each `DEMO_CATEGORIES` entry (the first of `seed` that has it) into `folder`."""
    from .data import SyntheticConfig, generate_referring_sample

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = SyntheticConfig(image_size=image_size)
    wanted = list(DEMO_CATEGORIES)
    examples = []
    index = 0
    while wanted:
        image, expression, mask, info = generate_referring_sample(seed, index, config)
        category = (info["expression_kind"], info["target_size_class"])
        if category in wanted:
            wanted.remove(category)
            name = f"{len(examples):02d}-{category[0]}-{category[1]}"
            image.save(folder / f"{name}.png")
            save_mask(mask, folder / f"{name}-gt.png")
            examples.append(DemoExample(name, f"{name}.png", expression, f"{name}-gt.png", seed, index))
        index += 1
    (folder / "examples.json").write_text(json.dumps([asdict(example) for example in examples], indent=2) + "\n")
    return examples


def save_mask(mask: torch.Tensor | np.ndarray, path: str | Path) -> None:
    """Write a bool mask as a mode "L" PNG, 255 inside (what `read_mask` reads back)."""
    save_image(mask_to_image(mask), path)


def mask_to_image(mask: torch.Tensor | np.ndarray) -> PIL.Image.Image:
    """A bool mask as a mode "L" image, 255 inside."""
    return PIL.Image.fromarray(np.asarray(mask).astype(np.uint8) * 255)


def mask_from_image(image: PIL.Image.Image) -> torch.Tensor:
    """A bool mask from an image (nonzero = object)."""
    return torch.from_numpy(np.asarray(image.convert("L")) > 0)


def read_mask(path: str | Path) -> torch.Tensor:
    """A bool mask from a PNG (nonzero = object)."""
    return mask_from_image(read_image(path))


def mask_iou(mask: torch.Tensor, gt: torch.Tensor) -> float:
    """IoU of two bool masks of one size; two empty masks agree perfectly (1.0)."""
    if gt.shape != mask.shape:
        raise ValueError(f"the ground truth is {tuple(gt.shape)} but the mask is {tuple(mask.shape)}")
    union = (gt | mask).sum().item()
    return 1.0 if union == 0 else (gt & mask).sum().item() / union


def run_demo(
    model: Self1EForSegmentation,
    processor: Self1EProcessor,
    out: str | Path,
    folder: str | Path = DEMO_EXAMPLES,
) -> list[dict]:
    """Segment every example of `folder`; write `NAME-mask.png` and `NAME-overlay.png` into `out`, and `demo.png`, a
    contact sheet with one row per example (image, ground truth, prediction, overlay, sentence and IoU).

    Returns one dict per example: `name`, `prompt`, `iou` (with the ground truth), `pixels` (of the predicted mask),
    `no_target` (the mask is empty), `mask` and `overlay` (the written paths).
    """
    folder, out = Path(folder), Path(out)
    examples = load_demo_examples(folder)
    check_output_folder(out)
    outputs = [out / f"{example.name}-{kind}.png" for example in examples for kind in ("mask", "overlay")]
    inputs = [folder / name for example in examples for name in (example.image, example.gt)]
    check_output_files([*outputs, out / DEMO_SHEET], inputs=inputs)
    # Every image is read before the first output is written, so a bad file leaves no partial demo behind.
    images = [read_image(folder / example.image).convert("RGB") for example in examples]
    gts = [read_mask(folder / example.gt) for example in examples]
    for example, image, gt in zip(examples, images, gts):
        if gt.shape != (image.height, image.width):
            raise ValueError(
                f"{folder / example.gt} is {gt.shape[1]}x{gt.shape[0]} but {folder / example.image} is "
                f"{image.width}x{image.height}"
            )
    rows, sheet_rows = [], []
    for example, image, gt in zip(examples, images, gts):
        result = model.segment(image, example.prompt, processor=processor)
        mask, no_target = result.masks[0], bool(result.no_target[0])
        iou = mask_iou(mask, gt)
        mask_path, overlay_path = out / f"{example.name}-mask.png", out / f"{example.name}-overlay.png"
        save_mask(mask, mask_path)
        save_image(draw_overlay(image, result.masks, result.prompts, result.scores), overlay_path)
        found = "no target" if no_target else f"{int(mask.sum())} px"
        sheet_rows.append(
            SheetRow(
                f'{example.name}:  "{example.prompt}"  IoU {iou:.3f}  ({found})',
                [
                    ("image", image),
                    ("ground truth", mask_to_image(gt)),
                    ("prediction", mask_to_image(mask)),
                    ("overlay", draw_overlay(image, result.masks, result.prompts, legend=False)),
                ],
            )
        )
        rows.append(
            {
                "name": example.name,
                "prompt": example.prompt,
                "iou": iou,
                "pixels": int(mask.sum()),
                "no_target": no_target,
                "mask": mask_path,
                "overlay": overlay_path,
            }
        )
    title = f"SELF1E demo: mean IoU {np.mean([row['iou'] for row in rows]):.3f} over {len(rows)} examples"
    save_image(contact_sheet(sheet_rows, title=title), out / DEMO_SHEET)
    return rows
