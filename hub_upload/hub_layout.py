"""What a SELF1E Hub folder holds: the remote-code files and the auto classes they provide. The custom pipeline is
the config's own (`Self1EConfig.custom_pipelines`, saved in `config.json` with it)."""

from pathlib import Path

from transformers_self1e import modeling

# `modeling/` is exactly what is uploaded as remote code; the package installs it as `transformers_self1e.modeling`.
MODELING_DIR = Path(modeling.__file__).resolve().parent
# The Hub's task of the model card and the task the config's custom pipeline serves.
PIPELINE_TASK = "image-segmentation"
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
