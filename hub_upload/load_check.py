"""Loads a SELF1E Hub folder the way a Hub user would and prints `{"problems": [...]}` as its last line.

Run by `folder_check.load_problems` in a fresh interpreter, as a script (not `-m`, so that the `hub_upload` package,
which imports `transformers_self1e`, stays out of it):

    python hub_upload/load_check.py FOLDER (--full | --meta)

`transformers_self1e` is made unimportable first (`package_blocker.py`): the folder's remote code must be enough.
With `--meta` the model is built on the meta device and its parameter names and shapes are compared with the
safetensors headers (which hold the module names, as `export` writes them); no forward pass is possible there.
`--full` loads the weights and runs one forward pass on a small synthetic image with a `[SEG]` prompt, whose logits
and mask logits must be finite.
"""

# A sibling module (this file runs as a script, its folder first on `sys.path`), imported first: nothing below may
# import `transformers_self1e`.
from package_blocker import block_package

block_package()

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
from transformers.dynamic_module_utils import get_class_from_dynamic_module

REMOTE_CODE_PACKAGE = "transformers_modules"
MAX_LISTED = 20
TEST_IMAGE_SIZE = (48, 64)
TEST_PROMPT = "the object in the middle"


def stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as reader:
            names = reader.keys()
            shapes.update({name: tuple(reader.get_slice(name).get_shape()) for name in names})
    return shapes


def listed(names) -> str:
    names = sorted(names)
    return ", ".join(map(str, names[:MAX_LISTED])) + (
        f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else ""
    )


def weights_problems_on_meta(folder: Path, config) -> list[str]:
    """Parameter names and shapes of the model built from `config` on the meta device against the stored ones."""
    with torch.device("meta"):
        model = AutoModel.from_config(config, trust_remote_code=True)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    stored = stored_shapes(folder)
    tied = set(model._tied_weights_keys or ()) if config.tie_word_embeddings else set()
    problems = []
    if missing := expected.keys() - stored.keys() - tied:
        problems.append(f"weights missing from the folder: {listed(missing)}")
    if unexpected := stored.keys() - expected.keys():
        problems.append(f"weights the model does not have: {listed(unexpected)}")
    if mismatched := [
        f"{name} {stored[name]} (model: {shape})"
        for name, shape in expected.items()
        if name in stored and stored[name] != shape
    ]:
        problems.append(f"weights of the wrong shape: {listed(mismatched)}")
    return problems


def forward_problems(model, processor) -> list[str]:
    """One forward pass on a small random image with a `[SEG]` prompt: its logits and its mask logits must be finite
    (weights overwritten with NaN, or values that overflow the dtype, load without any error)."""
    pixels = np.random.default_rng(0).integers(0, 256, (*TEST_IMAGE_SIZE, 3), dtype=np.uint8)
    inputs = processor.prepare_segmentation_inputs(PIL.Image.fromarray(pixels), TEST_PROMPT)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.no_grad():
        outputs = model(**inputs)
    shapes = [tuple(mask.shape) for mask in outputs.pred_masks]
    if len(shapes) != 1 or shapes[0][0] != 1:
        return [f"the forward pass on a test image gave masks of shapes {shapes} for one [SEG] prompt"]
    non_finite = [
        what
        for what, values in (("logits", outputs.logits), ("mask logits", outputs.pred_masks[0]))
        if not bool(torch.isfinite(values).all())
    ]
    if non_finite:
        return [
            f"the forward pass on a test image gave non-finite {' and '.join(non_finite)}: the weights hold NaN or "
            + f"infinity, or overflow in {model.dtype}"
        ]
    return []


def check(folder: Path, full: bool) -> list[str]:
    problems: list[str] = []

    def attempt(what: str, load: Callable):
        try:
            return load()
        except Exception as error:  # noqa: BLE001 - every failure is a problem to report, not a crash
            problems.append(f"{what} failed: {type(error).__name__}: {error}")
            return None

    config = attempt("AutoConfig.from_pretrained", lambda: AutoConfig.from_pretrained(folder, trust_remote_code=True))
    if config is None:
        return problems
    model = None
    if full:
        loaded = attempt(
            "AutoModel.from_pretrained",
            lambda: AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True),
        )
        if loaded is not None:
            model, info = loaded
            if not type(model).__module__.startswith(REMOTE_CODE_PACKAGE):
                problems.append(
                    f"AutoModel loaded {type(model).__module__}.{type(model).__name__}, not the remote code"
                )
            for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
                if info.get(kind):
                    problems.append(
                        f"AutoModel.from_pretrained reports {kind.replace('_', ' ')}: {listed(info[kind])}"
                    )
    else:
        problems += (
            attempt("AutoModel.from_config on the meta device", lambda: weights_problems_on_meta(folder, config)) or []
        )
    processor = attempt(
        "AutoProcessor.from_pretrained", lambda: AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    )
    if processor is not None:
        processor_problems = processor.check_model_config(config, raise_error=False)
        problems += processor_problems
        if model is not None and not processor_problems:
            problems += attempt("the forward pass on a test image", lambda: forward_problems(model, processor)) or []
    attempt(
        "AutoImageProcessor.from_pretrained",
        lambda: AutoImageProcessor.from_pretrained(folder, trust_remote_code=True),
    )
    for task, spec in (getattr(config, "custom_pipelines", None) or {}).items():
        impl = spec["impl"]
        attempt(f"the {task} pipeline class", lambda: get_class_from_dynamic_module(impl, str(folder)))  # noqa: B023
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="load the weights")
    mode.add_argument("--meta", action="store_true", help="compare names and shapes on the meta device")
    args = parser.parse_args()
    print(json.dumps({"problems": check(args.folder, full=args.full)}))


if __name__ == "__main__":
    main()
