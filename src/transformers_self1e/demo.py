"""The shipped examples: synthetic images with a sentence and a ground-truth mask each, segmented by `self1e demo`.

`assets/examples/examples.json` lists them (`name`, `image`, `prompt`, `gt`, and the synthetic `seed`/`index` that
made them); `write_demo_examples` regenerates the folder, `run_demo` writes a mask and an overlay PNG per example and
returns its IoU with the ground truth.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from .modeling import Self1EForSegmentation, Self1EProcessor

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED_MODEL = ASSETS / "self1e-tiny-synthetic"
DEMO_EXAMPLES = ASSETS / "examples"
OVERLAY_COLORS = np.array(
    [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230)],
    dtype=np.float32,
)
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
    """The examples listed in `folder/examples.json`."""
    listing = Path(folder) / "examples.json"
    if not listing.is_file():
        raise FileNotFoundError(f"no examples.json in {folder}")
    return [DemoExample(**entry) for entry in json.loads(listing.read_text())]


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


def overlay(image: PIL.Image.Image, masks: torch.Tensor, alpha: float = 0.5) -> PIL.Image.Image:
    """The image with each mask tinted in its own colour."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, mask in enumerate(masks.numpy()):
        color = OVERLAY_COLORS[index % len(OVERLAY_COLORS)]
        canvas[mask] = (1 - alpha) * canvas[mask] + alpha * color
    return PIL.Image.fromarray(canvas.round().astype(np.uint8))


def save_mask(mask: torch.Tensor | np.ndarray, path: str | Path) -> None:
    """Write a bool mask as a mode "L" PNG, 255 inside (what `read_mask` reads back)."""
    PIL.Image.fromarray(np.asarray(mask).astype(np.uint8) * 255).save(path)


def read_mask(path: str | Path) -> torch.Tensor:
    """A bool mask from a PNG (nonzero = object)."""
    return torch.from_numpy(np.asarray(PIL.Image.open(path).convert("L")) > 0)


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
    """Segment every example of `folder`; write `NAME-mask.png` and `NAME-overlay.png` into `out`.

    Returns one dict per example: `name`, `prompt`, `iou` (with the ground truth), `pixels` (of the predicted mask),
    `no_target` (the mask is empty), `mask` and `overlay` (the written paths).
    """
    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for example in load_demo_examples(folder):
        image = PIL.Image.open(folder / example.image).convert("RGB")
        result = model.segment(image, example.prompt, processor=processor)
        mask = result.masks[0]
        mask_path, overlay_path = out / f"{example.name}-mask.png", out / f"{example.name}-overlay.png"
        save_mask(mask, mask_path)
        overlay(image, result.masks).save(overlay_path)
        rows.append(
            {
                "name": example.name,
                "prompt": example.prompt,
                "iou": mask_iou(mask, read_mask(folder / example.gt)),
                "pixels": int(mask.sum()),
                "no_target": bool(result.no_target[0]),
                "mask": mask_path,
                "overlay": overlay_path,
            }
        )
    return rows
