"""Loading with transformers' quantization configs, on the CPU: torchao int8 and int4 weight-only quantize the language
model's and the vision tower's linear layers, keep `modules_to_not_quantize` in float32, and segment the demo examples
as the float32 model does. torchao runs in a subprocess of its own (see `helpers.isolated_packages`)."""

import subprocess
import sys
import textwrap

import pytest
import torch
from helpers.isolated_packages import TORCHAO, environment_with, isolated_package

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples, mask_iou

# The torchao configs under test, by name: int4 stores one 4-bit value per byte on the CPU (torchao's packed int4
# layouts need CUDA kernels), in groups of 32 input channels that each have their own scale.
SCHEMES = {
    "int8": ("Int8WeightOnlyConfig()", "Int8Tensor", (-128, 127)),
    "int4": (
        "IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))",
        "IntxUnpackedToInt8Tensor",
        (-8, 7),
    ),
}
SEGMENT_WITH_QUANTIZED_WEIGHTS = """
    import torch
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerGroup
    from transformers import AutoModel, TorchAoConfig

    from transformers_self1e import Self1EForSegmentation
    from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples

    runs = {{}}
    for name, scheme in {schemes!r}.items():
        # Kept in full precision as recommended, or every linear layer quantized (an empty list, not transformers'
        # default of the LM head).
        for kept in ("recommended", "nothing"):
            skipped = list(Self1EForSegmentation.modules_to_not_quantize) if kept == "recommended" else []
            config = TorchAoConfig(eval(scheme), modules_to_not_convert=skipped)
            model = AutoModel.from_pretrained(SHIPPED_MODEL, quantization_config=config, device_map="cpu").eval()
            weights = {{
                name: module.weight for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)
            }}
            stored = [weight.qdata for weight in weights.values() if hasattr(weight, "qdata")]
            norms = [module.weight for module in model.modules() if type(module).__name__.endswith("Norm")]
            runs[name, kept] = {{
                "weight_types": {{name: type(weight).__name__ for name, weight in weights.items()}},
                "weight_dtypes": {{name: str(weight.dtype) for name, weight in weights.items()}},
                "stored_range": (min(data.min().item() for data in stored), max(data.max().item() for data in stored)),
                "norm_weights": {{(type(weight).__name__, str(weight.dtype)) for weight in norms}},
                "masks": {{
                    example.name: model.segment(str(DEMO_EXAMPLES / example.image), example.prompt).masks
                    for example in load_demo_examples()
                }},
            }}
    torch.save(runs, {out!r})
"""


@pytest.fixture(scope="module")
def quantized_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized") / "runs.pt"
    schemes = {name: scheme for name, (scheme, _, _) in SCHEMES.items()}
    script = textwrap.dedent(SEGMENT_WITH_QUANTIZED_WEIGHTS.format(schemes=schemes, out=str(out)))
    environment = environment_with(isolated_package(TORCHAO))
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


@pytest.fixture(scope="module")
def float32_masks():
    model = Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval()
    return {
        example.name: model.segment(str(DEMO_EXAMPLES / example.image), example.prompt).masks
        for example in load_demo_examples()
    }


@pytest.mark.slow
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_quantized_weights_everywhere_but_the_modules_kept(quantized_runs, scheme):
    run = quantized_runs[scheme, "recommended"]
    _, tensor_type, value_range = SCHEMES[scheme]
    kept = Self1EForSegmentation.modules_to_not_quantize
    is_kept = {name: any(name == key or name.startswith(f"{key}.") for key in kept) for name in run["weight_types"]}
    quantized = [name for name, keep in is_kept.items() if not keep]
    assert any(name.startswith("model.language_model.") for name in quantized)
    assert any(name.startswith("model.vision_tower.") for name in quantized)
    assert {run["weight_types"][name] for name in quantized} == {tensor_type}
    # The stored integers use the scheme's whole range (symmetric int4: -8..7), and no more.
    assert run["stored_range"] == value_range
    for name in (name for name, keep in is_kept.items() if keep):
        assert (run["weight_types"][name], run["weight_dtypes"][name]) == ("Parameter", "torch.float32")
    # LayerNorm (vision tower, projector) and RMSNorm (language model) weights are never quantized.
    assert run["norm_weights"] == {("Parameter", "torch.float32")}
    # Nothing kept: the mask head and the projector, which SELF1E otherwise reads directly, are quantized too.
    assert set(quantized_runs[scheme, "nothing"]["weight_types"].values()) == {tensor_type}


@pytest.mark.slow
@pytest.mark.parametrize("kept", ["recommended", "nothing"])
@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_quantized_masks_match_float32_on_the_demo_examples(quantized_runs, float32_masks, scheme, kept):
    for name, expected in float32_masks.items():
        assert mask_iou(quantized_runs[scheme, kept]["masks"][name], expected) >= 0.95, name
