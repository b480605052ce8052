"""`--quantize int8|int4`: 8-bit or 4-bit weights through transformers' quantization configs, by device. On CUDA
bitsandbytes (LLM.int8, or nf4 computing in the model's dtype); elsewhere torchao, weight-only (int8, or int4 in
groups of 32 input channels with a scale each). The mask head, the projector and the LM head keep the model's dtype
(`Self1EForSegmentation.modules_to_not_quantize`). Both packages come with the 'quantize' extra."""

import importlib

import torch
from transformers import BitsAndBytesConfig, TorchAoConfig
from transformers.utils.quantization_config import QuantizationConfigMixin

from .modeling import Self1EForSegmentation

QUANTIZATION_SCHEMES = ("int8", "int4")


def quantization_config(scheme: str, device: str | torch.device, dtype: torch.dtype) -> QuantizationConfigMixin:
    """The quantization config of `scheme` (`int8` or `int4`) for a model on `device` computing in `dtype`:
    [`bitsandbytes_config`] on CUDA, [`torchao_config`] elsewhere."""
    if torch.device(device).type == "cuda":
        return bitsandbytes_config(scheme, dtype)
    return torchao_config(scheme)


def bitsandbytes_config(scheme: str, dtype: torch.dtype) -> BitsAndBytesConfig:
    """LLM.int8 (`int8`) or nf4 computing in `dtype` (`int4`), the recommended modules kept.

    Raises:
        ValueError: `scheme` is not one of `QUANTIZATION_SCHEMES`.
        ModuleNotFoundError: bitsandbytes is not installed.
    """
    kept = _kept_modules(scheme)
    # Imported first, so that a missing package is a ModuleNotFoundError naming it.
    importlib.import_module("bitsandbytes")
    if scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=kept)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=kept
    )


def torchao_config(scheme: str) -> TorchAoConfig:
    """torchao weight-only int8 (`int8`), or int4 in groups of 32 input channels (`int4`; on the CPU stored one value
    per byte: torchao's packed int4 layouts need CUDA kernels), the recommended modules kept.

    Raises:
        ValueError: `scheme` is not one of `QUANTIZATION_SCHEMES`.
        ModuleNotFoundError: torchao is not installed.
    """
    kept = _kept_modules(scheme)
    torchao = importlib.import_module("torchao.quantization")
    if scheme == "int8":
        weights = torchao.Int8WeightOnlyConfig()
    else:
        weights = torchao.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=torchao.PerGroup(32))
    return TorchAoConfig(weights, modules_to_not_convert=kept)


def _kept_modules(scheme: str) -> list[str]:
    if scheme not in QUANTIZATION_SCHEMES:
        raise ValueError(f"quantization scheme must be one of {', '.join(QUANTIZATION_SCHEMES)}, got {scheme!r}")
    return list(Self1EForSegmentation.modules_to_not_quantize)


__all__ = ["QUANTIZATION_SCHEMES", "bitsandbytes_config", "quantization_config", "torchao_config"]
