"""Loading with transformers' quantization configs, on the CPU: torchao int8 weight-only quantizes the language
model's and the vision tower's linear layers, keeps `modules_to_not_quantize` in float32, and segments the demo
examples as the float32 model does. torchao runs in a subprocess of its own (see `helpers.isolated_packages`)."""

import subprocess
import sys
import textwrap

import pytest
import torch
from helpers.isolated_packages import environment_with, isolated_package

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples

TORCHAO = "torchao==0.18.0"
SEGMENT_WITH_INT8_WEIGHTS = """
    import torch
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import AutoModel, TorchAoConfig

    from transformers_self1e import Self1EForSegmentation
    from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples

    kept = list(Self1EForSegmentation.modules_to_not_quantize)
    config = TorchAoConfig(Int8WeightOnlyConfig(), modules_to_not_convert=kept)
    model = AutoModel.from_pretrained(SHIPPED_MODEL, quantization_config=config, device_map="cpu").eval()
    weights = {{name: module.weight for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}}
    torch.save(
        {{
            "weight_types": {{name: type(weight).__name__ for name, weight in weights.items()}},
            "weight_dtypes": {{name: str(weight.dtype) for name, weight in weights.items()}},
            "masks": {{
                example.name: model.segment(str(DEMO_EXAMPLES / example.image), example.prompt).masks
                for example in load_demo_examples()
            }},
        }},
        {out!r},
    )
"""


def iou(first: torch.Tensor, second: torch.Tensor) -> float:
    union = (first | second).sum().item()
    return 1.0 if union == 0 else (first & second).sum().item() / union


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "run.pt"
    script = textwrap.dedent(SEGMENT_WITH_INT8_WEIGHTS.format(out=str(out)))
    environment = environment_with(isolated_package(TORCHAO))
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.mark.slow
def test_int8_weights_everywhere_but_the_modules_kept(int8_run):
    kept = Self1EForSegmentation.modules_to_not_quantize
    is_kept = {
        name: any(name == key or name.startswith(f"{key}.") for key in kept) for name in int8_run["weight_types"]
    }
    quantized = [name for name, keep in is_kept.items() if not keep]
    assert any(name.startswith("model.language_model.") for name in quantized)
    assert any(name.startswith("model.vision_tower.") for name in quantized)
    assert {int8_run["weight_types"][name] for name in quantized} == {"Int8Tensor"}
    for name in (name for name, keep in is_kept.items() if keep):
        assert (int8_run["weight_types"][name], int8_run["weight_dtypes"][name]) == ("Parameter", "torch.float32")


@pytest.mark.slow
def test_int8_masks_match_float32_on_the_demo_examples(int8_run):
    model = Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval()
    for example in load_demo_examples():
        expected = model.segment(str(DEMO_EXAMPLES / example.image), example.prompt).masks
        assert iou(int8_run["masks"][example.name], expected) >= 0.95, example.name
