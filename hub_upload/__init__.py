"""Publishing SELF1E models on the Hugging Face Hub.

    python -m hub_upload export MODEL_OR_DIR --out DIR [--processor DIR] [--results results.json] ...
    python -m hub_upload push DIR --repo-id org/name [--private] [--revision BRANCH] [--dry-run]

`export` writes a self-contained Hub folder: weights (sharded safetensors), config with `auto_map` and the
`image-segmentation` custom pipeline, processor, generation config, model card, and the remote code, which is exactly
the files of `modeling/`. `push` checks such a folder (and that it loads with `trust_remote_code=True` in a fresh
interpreter without `transformers_self1e`) before uploading it with `huggingface_hub`.

The package installs this folder as `transformers_self1e.hub_upload`, with `self1e export` and `self1e push` as the
same commands; `python -m hub_upload` runs them from a checkout.
"""

from .export import export_hub_folder
from .folder_check import FolderCheckError, check_hub_folder
from .push import push_hub_folder

__all__ = ["FolderCheckError", "check_hub_folder", "export_hub_folder", "push_hub_folder"]
