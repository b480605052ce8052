"""What a SELF1E Hub folder holds: the remote-code files, the auto classes they provide, the custom pipeline."""

from pathlib import Path

from transformers_self1e import modeling

# `modeling/` is exactly what is uploaded as remote code; the package installs it as `transformers_self1e.modeling`.
MODELING_DIR = Path(modeling.__file__).resolve().parent
PIPELINE_TASK = "image-segmentation"
PIPELINE_FILE = "pipeline_self1e.py"
PIPELINE_CLASS = "Self1EImageSegmentationPipeline"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# Never uploaded, besides huggingface_hub's own defaults (`.git`, `.cache/huggingface`).
IGNORE_PATTERNS = ["*.pyc", "__pycache__/*", "*/__pycache__/*"]


def code_files() -> list[Path]:
    """The remote-code files, i.e. every Python file of `modeling/`."""
    return sorted(MODELING_DIR.glob("*.py"))


def class_reference(cls: type) -> str:
    """`module.Class`, how `auto_map` and `custom_pipelines` name a class of the remote code."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def config_auto_map() -> dict[str, str]:
    """The `auto_map` of `config.json`: every auto class a SELF1E folder serves."""
    return {
        "AutoConfig": class_reference(modeling.Self1EConfig),
        "AutoModel": class_reference(modeling.Self1EForSegmentation),
        "AutoProcessor": class_reference(modeling.Self1EProcessor),
        "AutoImageProcessor": class_reference(modeling.Self1EImageProcessor),
    }


def custom_pipelines() -> dict[str, dict]:
    """`custom_pipelines` of `config.json`, in the format of transformers' `Pipeline.save_pretrained` for a pipeline
    registered with `PIPELINE_REGISTRY.register_pipeline`; empty while `modeling/` has no pipeline file."""
    if not (MODELING_DIR / PIPELINE_FILE).is_file():
        return {}
    return {
        PIPELINE_TASK: {
            "impl": f"{Path(PIPELINE_FILE).stem}.{PIPELINE_CLASS}",
            "pt": ["AutoModel"],
            "tf": [],
            "type": "multimodal",
        }
    }
