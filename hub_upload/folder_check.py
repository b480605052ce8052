"""Checks that a folder is a complete SELF1E Hub repository before anything is uploaded.

Static checks read files only: required files, remote code identical to `modeling/` with every relative import
present, `auto_map` / `custom_pipelines` entries that name classes defined in the folder's code, a weights index
that agrees with the safetensors headers, and card metadata the Hub can list the model with. Every floating-point
weight is then read, one tensor at a time, and must be finite. The load check runs `load_check.py` in a fresh
interpreter where `transformers_self1e` cannot be imported, so the folder is loaded exactly as a Hub user would load
it; a full load also runs one forward pass on a small synthetic image, whose logits and mask logits must be finite.
A load on the meta device (large folders) runs no forward pass: there the weight scan is the only check of values.
"""

import ast
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects
from safetensors import SafetensorError, safe_open

from .hub_layout import IGNORE_PATTERNS, PIPELINE_TASK, WEIGHTS_FILE, WEIGHTS_INDEX, code_files, config_auto_map

REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "README.md",
)
CARD_METADATA = {"library_name": "transformers", "pipeline_tag": PIPELINE_TASK}
LOAD_CHECK_SCRIPT = Path(__file__).with_name("load_check.py")
FULL_LOAD_LIMIT = 2**30
"""Folders with at most this many bytes of weights are loaded fully by the load check and run a forward pass; larger
ones are checked on the meta device, where no forward pass is possible."""
LOAD_CHECK_TIMEOUT = 1800
MAX_LISTED = 10


class FolderCheckError(Exception):
    """A folder that would not work on the Hub; `problems` lists every reason."""

    def __init__(self, folder: str | Path, problems: list[str]):
        self.folder = Path(folder)
        self.problems = problems
        super().__init__(f"{folder} is not a complete SELF1E Hub folder:\n- " + "\n- ".join(problems))


@dataclass(frozen=True)
class FolderReport:
    """What a passing check saw: the files to upload (relative path, bytes) and how the model was loaded."""

    files: list[tuple[str, int]]
    full_load: bool

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def upload_files(folder: str | Path) -> list[tuple[str, int]]:
    """The files `upload_folder` sends (relative path, bytes), with the same ignore patterns."""
    folder = Path(folder)
    paths = {path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()}
    kept = filter_repo_objects(paths, ignore_patterns=[*DEFAULT_IGNORE_PATTERNS, *IGNORE_PATTERNS])
    return [(name, paths[name].stat().st_size) for name in kept]


def check_hub_folder(folder: str | Path, full_load: bool | None = None) -> FolderReport:
    """Runs the static checks, then the scan of the weights for NaN and infinity and the load check (fully loading the
    model and running one forward pass when `full_load`, or by default when the weights take at most `FULL_LOAD_LIMIT`
    bytes, else on the meta device, without a forward pass).

    Raises:
        FolderCheckError: listing every problem found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderCheckError(folder, ["no such folder"])
    problems = static_problems(folder)
    if problems:
        raise FolderCheckError(folder, problems)
    files = upload_files(folder)
    if full_load is None:
        full_load = sum(size for name, size in files if name.endswith(".safetensors")) <= FULL_LOAD_LIMIT
    problems = non_finite_weight_problems(folder) + load_problems(folder, full_load)
    if problems:
        raise FolderCheckError(folder, problems)
    return FolderReport(files, full_load)


def static_problems(folder: Path) -> list[str]:
    """Every problem found without importing the folder's code."""
    problems = [f"{name} is missing" for name in REQUIRED_FILES if not (folder / name).is_file()]
    problems += _code_problems(folder) + _auto_class_problems(folder) + _weights_problems(folder)
    return problems + _card_problems(folder)


def _card_problems(folder: Path) -> list[str]:
    """The card's metadata must say what the Hub needs to list and run the model."""
    if not (folder / "README.md").is_file():
        return []
    try:
        metadata = ModelCard.load(folder / "README.md").data
    except (ValueError, yaml.YAMLError) as error:
        return [f"README.md has no valid YAML metadata ({error})"]
    return [
        f"README.md metadata has no {key}: {value!r} expected"
        for key, value in CARD_METADATA.items()
        if getattr(metadata, key, None) != value
    ] + ([] if metadata.license else ["README.md metadata has no license"])


def _code_problems(folder: Path) -> list[str]:
    expected = {path.name: path for path in code_files()}
    present = {path.name: path for path in folder.glob("*.py")}
    problems = [f"remote-code file {name} is missing" for name in sorted(expected.keys() - present.keys())]
    problems += [f"{name} is not a file of modeling/" for name in sorted(present.keys() - expected.keys())]
    problems += [
        f"{name} differs from modeling/{name}: export the folder again"
        for name in sorted(expected.keys() & present.keys())
        if expected[name].read_bytes() != present[name].read_bytes()
    ]
    for name, path in sorted(present.items()):
        imported = {
            node.module
            for node in ast.walk(ast.parse(path.read_bytes(), filename=name))
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        problems += [
            f"{name} imports .{module}, but {module}.py is missing"
            for module in sorted(imported)
            if not (folder / f"{module}.py").is_file()
        ]
    return problems


def _auto_class_problems(folder: Path) -> list[str]:
    problems = []
    config = _read_json(folder / "config.json", problems)
    if config is None:
        return problems
    if config.get("model_type") != "self1e":
        problems.append(f"config.json has model_type {config.get('model_type')!r}, not 'self1e'")
    auto_map = config.get("auto_map") or {}
    for auto_class in config_auto_map():
        if auto_class not in auto_map:
            problems.append(f"config.json auto_map has no {auto_class}")
        else:
            problems += _class_problems(folder, f"config.json auto_map[{auto_class!r}]", auto_map[auto_class])
    for task, spec in (config.get("custom_pipelines") or {}).items():
        where = f"config.json custom_pipelines[{task!r}]"
        problems += _class_problems(folder, f"{where}['impl']", spec.get("impl", ""))
        unknown = [name for name in spec.get("pt", []) if not hasattr(transformers, name)]
        problems += [f"{where}['pt'] names {name!r}, which transformers does not have" for name in unknown]
    processor_config = _read_json(folder / "processor_config.json", problems)
    if processor_config is not None:
        processor_map = processor_config.get("auto_map") or {}
        image_map = (processor_config.get("image_processor") or {}).get("auto_map") or {}
        for where, auto_map, auto_class in (
            ("processor_config.json auto_map", processor_map, "AutoProcessor"),
            ("processor_config.json image_processor auto_map", image_map, "AutoImageProcessor"),
        ):
            if auto_class not in auto_map:
                problems.append(f"{where} has no {auto_class}")
            else:
                problems += _class_problems(folder, f"{where}[{auto_class!r}]", auto_map[auto_class])
    return problems


def _class_problems(folder: Path, where: str, reference: str) -> list[str]:
    """Problems with a `module.Class` reference of the folder's remote code."""
    module, _, class_name = reference.rpartition(".")
    if not module or "--" in module:
        return [f"{where} = {reference!r} is not a `module.Class` of this folder"]
    path = folder / f"{module}.py"
    if not path.is_file():
        return [f"{where} = {reference!r}, but {module}.py is missing"]
    tree = ast.parse(path.read_bytes(), filename=path.name)
    if not any(isinstance(node, ast.ClassDef) and node.name == class_name for node in tree.body):
        return [f"{where} = {reference!r}, but {module}.py defines no class {class_name}"]
    return []


def _weights_problems(folder: Path) -> list[str]:
    index_path, single = folder / WEIGHTS_INDEX, folder / WEIGHTS_FILE
    if index_path.is_file() and single.is_file():
        return [f"both {WEIGHTS_FILE} and {WEIGHTS_INDEX}: which weights load is ambiguous"]
    if single.is_file():
        return [] if _safetensors_keys(single) is not None else [f"{WEIGHTS_FILE} is not a readable safetensors file"]
    if not index_path.is_file():
        return [f"no weights: neither {WEIGHTS_FILE} nor {WEIGHTS_INDEX}"]
    problems = []
    index = _read_json(index_path, problems)
    if index is None:
        return problems
    weight_map: dict[str, str] = index.get("weight_map") or {}
    if not weight_map:
        return [f"{WEIGHTS_INDEX} has no weight_map"]
    listed = set(weight_map.values())
    problems += [
        f"{name} is not listed in {WEIGHTS_INDEX}"
        for name in sorted(path.name for path in folder.glob("*.safetensors"))
        if name not in listed
    ]
    for shard in sorted(listed):
        path = folder / shard
        if not path.is_file():
            problems.append(f"{shard}, listed in {WEIGHTS_INDEX}, is missing")
            continue
        keys = _safetensors_keys(path)
        if keys is None:
            problems.append(f"{shard} is not a readable safetensors file")
            continue
        expected = {name for name, file_name in weight_map.items() if file_name == shard}
        problems += [f"{name} is mapped to {shard} but is not in it" for name in sorted(expected - keys)]
        problems += [f"{shard} holds {name}, which {WEIGHTS_INDEX} does not list" for name in sorted(keys - expected)]
    return problems


def _safetensors_keys(path: Path) -> set[str] | None:
    """The tensor names of a safetensors file, `None` when its header cannot be read."""
    try:
        with safe_open(path, framework="pt") as reader:
            return set(reader.keys())
    except (OSError, SafetensorError):
        return None


def non_finite_weight_problems(folder: Path) -> list[str]:
    """The safetensors files whose floating-point tensors hold NaN or infinity, each tensor read on its own so that
    memory stays at one tensor. Such weights load without any error and would only show as NaN outputs."""
    problems = []
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as reader:
            broken = [name for name in sorted(reader.keys()) if not _is_finite(reader.get_tensor(name))]
        if broken:
            more = f", ... ({len(broken) - MAX_LISTED} more)" if len(broken) > MAX_LISTED else ""
            problems.append(f"{path.name} holds NaN or infinite values in {', '.join(broken[:MAX_LISTED])}{more}")
    return problems


def _is_finite(tensor: torch.Tensor) -> bool:
    return not tensor.is_floating_point() or bool(torch.isfinite(tensor).all())


def _read_json(path: Path, problems: list[str]) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        problems.append(f"{path.name} is not valid JSON ({error})")
        return None


def load_problems(folder: Path, full_load: bool) -> list[str]:
    """Problems found by loading the folder with `trust_remote_code=True` in a fresh interpreter that cannot import
    `transformers_self1e`, offline and with an empty modules cache."""
    with tempfile.TemporaryDirectory() as modules_cache:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": modules_cache}
        command = [sys.executable, str(LOAD_CHECK_SCRIPT), str(folder.resolve()), "--full" if full_load else "--meta"]
        result = subprocess.run(
            command, check=False, capture_output=True, text=True, env=env, timeout=LOAD_CHECK_TIMEOUT
        )
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])["problems"]
    except (IndexError, KeyError, json.JSONDecodeError):
        return [f"loading the folder in a fresh interpreter crashed:\n{result.stderr[-3000:]}"]


__all__ = [
    "FolderCheckError",
    "FolderReport",
    "check_hub_folder",
    "load_problems",
    "non_finite_weight_problems",
    "static_problems",
    "upload_files",
]
