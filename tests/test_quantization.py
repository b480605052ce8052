"""`--quantize int8|int4` (`transformers_self1e.quantization`): the backend by device, its error when missing, and
the command line segmenting with torchao int4 weights on the CPU as with float32 (torchao installed for that
subprocess only, see `helpers.isolated_packages`)."""

import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.isolated_packages import TORCHAO, environment_with, isolated_package

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, mask_iou
from transformers_self1e.quantization import quantization_config

IMAGE = DEMO_EXAMPLES / "01-position-regular.png"
PROMPTS = ["the leftmost shape", "the green circle", "the circle"]


def test_an_unknown_scheme_is_refused():
    with pytest.raises(ValueError, match="quantization scheme must be one of int8, int4, got 'int3'"):
        quantization_config("int3", "cpu", torch.float32)


@pytest.mark.parametrize(("device", "package"), [("cpu", "torchao"), ("cuda:0", "bitsandbytes")])
def test_a_missing_backend_is_named(monkeypatch, device, package):
    # `None` in sys.modules makes the import fail as an install without the package does.
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(ModuleNotFoundError) as error:
        quantization_config("int8", device, torch.float32)
    assert error.value.name.split(".")[0] == package


@pytest.mark.slow
def test_segment_with_int4_weights_writes_the_float32_masks(tmp_path):
    command = [sys.executable, "-m", "transformers_self1e.cli", "segment", str(IMAGE), *PROMPTS, "--quantize", "int4"]
    environment = environment_with(isolated_package(TORCHAO))
    result = subprocess.run([*command, "--out", str(tmp_path / "mask.png")], env=environment, capture_output=True)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval().segment(str(IMAGE), PROMPTS).masks
    for index, mask in enumerate(expected):
        written = torch.from_numpy(np.asarray(PIL.Image.open(tmp_path / f"mask-{index}.png")) > 0)
        assert mask_iou(written, mask) >= 0.95, PROMPTS[index]
