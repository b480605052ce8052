"""Folding unmerged PEFT LoRA factors into their base weights while a checkpoint streams through conversion.

The SELF1E reference training (`ANDYZAQ/SELF1E`, `train_hf_ivl_seq.py`) wraps the language model with
`get_peft_model` (`wrap_llm_lora(r, lora_alpha=2 * r)` of `model/internvl3/modeling_internvl_chat.py`, targets
`q/k/v/o_proj` and `gate/up/down_proj`) and optionally the vision tower (`wrap_backbone_lora`, targets `attn.qkv`,
`attn.proj`, `mlp.fc1`, `mlp.fc2`). It merges the adapters only at the very end of training, so every intermediate
checkpoint stores them unmerged, e.g.

    language_model.base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight
    language_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight   (r, in)
    language_model.base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight   (out, r)
    language_model.base_model.model.lm_head.weight

A PEFT adapter folder (`adapter_model.safetensors` + `adapter_config.json`, from `save_pretrained` of the wrapped
language model) stores the factors alone, as `base_model.model.<module>.lora_A.weight` with module names relative to
the language model. Either way the merged weight is PEFT's `W + scaling * B @ A`, with `scaling = lora_alpha / r`
(`lora_alpha / sqrt(r)` with rsLoRA).
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint_files import TensorInfo, checkpoint_shards, read_header, read_tensor
from .folder_writer import TensorConverter, format_names

ADAPTER_CONFIG = "adapter_config.json"
_LORA_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<factor>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_PEFT_WRAPPER = re.compile(r"(^|\.)base_model\.model\.")


def strip_peft_wrappers(name: str) -> str:
    """The name a weight has without PEFT's wrappers: `x.base_model.model.y.q_proj.base_layer.weight` ->
    `x.y.q_proj.weight`."""
    return _PEFT_WRAPPER.sub(r"\1", name).replace(".base_layer.", ".")


@dataclass(frozen=True)
class LoraPair:
    """The two factors of one adapted linear layer, as stored in the checkpoint."""

    a_name: str
    a: TensorInfo
    b_name: str
    b: TensorInfo

    @property
    def rank(self) -> int:
        return self.a.shape[0]


class LoraMerger:
    """Wraps a tensor converter so that each adapted weight is merged with its LoRA factors before conversion.

    Args:
        pairs: the factors of every adapted module, by module name without PEFT wrappers.
        lora_alpha: PEFT's `lora_alpha`; `None` uses twice each module's rank, as the reference training does.
        use_rslora: scale by `lora_alpha / sqrt(r)` instead of `lora_alpha / r`.
    """

    def __init__(self, pairs: Mapping[str, LoraPair], lora_alpha: float | None = None, use_rslora: bool = False):
        self.pairs = dict(pairs)
        self.lora_alpha = lora_alpha
        self.use_rslora = use_rslora

    @classmethod
    def from_header(
        cls,
        header: Mapping[str, TensorInfo],
        adapter_header: Mapping[str, TensorInfo] | None = None,
        adapter_prefix: str = "",
        lora_alpha: float | None = None,
        use_rslora: bool = False,
    ) -> "LoraMerger | None":
        """Finds the LoRA factors in a checkpoint's header, and in a separate adapter's whose module names get
        `adapter_prefix` (e.g. `"language_model."` for an adapter saved from the reference's language model alone).
        Returns `None` when there are none.

        Raises:
            ValueError: a factor without its partner, factors of several adapters, factors that disagree on the rank
                or with their weight's shape, or factors of a weight the checkpoint does not hold.
        """
        factors = [(name, info, "") for name, info in header.items() if _LORA_FACTOR.match(name)]
        factors += [(name, info, adapter_prefix) for name, info in (adapter_header or {}).items()]
        if not factors:
            return None
        by_module: dict[str, dict[str, tuple[str, TensorInfo]]] = {}
        adapters = set()
        for name, info, prefix in factors:
            match = _LORA_FACTOR.match(name)
            adapters.add(match["adapter"])
            by_module.setdefault(prefix + strip_peft_wrappers(match["module"]), {})[match["factor"]] = (name, info)
        if len(adapters) > 1:
            raise ValueError(f"the checkpoint holds several LoRA adapters ({sorted(map(str, adapters))}); merge one")
        base_shapes = {
            strip_peft_wrappers(name): info.shape for name, info in header.items() if not _LORA_FACTOR.match(name)
        }
        pairs, problems = {}, []
        for module, found in sorted(by_module.items()):
            if set(found) != {"A", "B"}:
                missing = ({"A", "B"} - set(found)).pop()
                problems.append(f"{module}: lora_{missing} is missing")
                continue
            pair = LoraPair(*found["A"], *found["B"])
            weight_shape = base_shapes.get(f"{module}.weight")
            if weight_shape is None:
                problems.append(f"{module}: LoRA factors without a base weight {module}.weight")
            elif pair.b.shape[1] != pair.rank or weight_shape != (pair.b.shape[0], pair.a.shape[1]):
                problems.append(
                    f"{module}: B {pair.b.shape} @ A {pair.a.shape} does not give the weight's shape {weight_shape}"
                )
            pairs[module] = pair
        if problems:
            raise ValueError("LoRA factors do not fit the checkpoint:\n  " + "\n  ".join(problems))
        return cls(pairs, lora_alpha, use_rslora)

    def scaling(self, pair: LoraPair) -> float:
        if self.lora_alpha is None:
            # ANDYZAQ/SELF1E `train_hf_ivl_seq.py`: `wrap_llm_lora(r=args.lora_r, lora_alpha=2 * args.lora_r)`.
            return 2.0
        return self.lora_alpha / (math.sqrt(pair.rank) if self.use_rslora else pair.rank)

    def merge(self, module: str, weight: torch.Tensor) -> torch.Tensor:
        """`weight + scaling * B @ A` in float32, returned in the weight's dtype (meta weights pass through)."""
        pair = self.pairs[module]
        if weight.is_meta:
            return weight
        lora_a = read_tensor(pair.a_name, pair.a).to(torch.float32)
        lora_b = read_tensor(pair.b_name, pair.b).to(torch.float32)
        # Out of place: the weight may share memory with the mapped checkpoint file.
        merged = torch.addmm(weight.to(torch.float32), lora_b, lora_a, alpha=self.scaling(pair))
        return merged.to(weight.dtype)

    def wrap(self, convert: TensorConverter) -> TensorConverter:
        """`convert` applied to PEFT-free names and merged weights; the factors themselves produce nothing."""

        def convert_merged(name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
            if _LORA_FACTOR.match(name):
                return []
            name = strip_peft_wrappers(name)
            module, _, kind = name.rpartition(".")
            if kind == "weight" and module in self.pairs:
                tensor = self.merge(module, tensor)
            return convert(name, tensor)

        return convert_merged


def load_lora_adapter(adapter: str | Path) -> tuple[dict[str, TensorInfo], float, bool]:
    """The header of a PEFT adapter folder (or its weights file), its `lora_alpha` and `use_rslora`."""
    adapter = Path(adapter)
    folder = adapter if adapter.is_dir() else adapter.parent
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: it gives the adapter's lora_alpha")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise ValueError(f"only plain LoRA adapters can be merged, {config_path} describes something else")
    if config.get("alpha_pattern"):
        raise ValueError(f"per-module lora_alpha (alpha_pattern in {config_path}) is not supported")
    header = read_header(checkpoint_shards(adapter))
    unknown = [name for name in header if not _LORA_FACTOR.match(name)]
    if unknown:
        raise ValueError(f"{adapter} holds tensors that are not LoRA factors: {format_names(unknown)}")
    return header, float(config["lora_alpha"]), bool(config.get("use_rslora", False))


__all__ = ["LoraMerger", "LoraPair", "load_lora_adapter", "strip_peft_wrappers"]
