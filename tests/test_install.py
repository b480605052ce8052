"""After `pip install transformers-self1e` without extras, every `self1e` command runs or says in one line which extra
it needs; the wheel carries `hub_upload/` as `transformers_self1e.hub_upload`."""

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from transformers_self1e.cli import build_parser
from transformers_self1e.data import encode_rle, rows_to_dataset, segmentation_row
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL
from transformers_self1e.hub_upload import export_hub_folder

REPO = Path(__file__).resolve().parents[1]
OPTIONAL_PACKAGES = ("accelerate", "datasets", "peft", "pyarrow", "pycocotools", "trl")
# `None` in sys.modules hides a package from `import` (ModuleNotFoundError) and from `importlib.util.find_spec`, which
# transformers uses to probe optional packages, as an install without it does. A meta-path finder that raises would
# break those probes instead, and one that returns None cannot hide an installed package.
_WITHOUT_PACKAGES = """
import sys

for name in sys.argv[1].split(","):
    sys.modules[name] = None

from transformers_self1e.cli import main

sys.exit(main(sys.argv[2:]))
"""
EXTRA_ERROR = re.compile(
    r"error: self1e \w+.* needs the '(?P<extra>\w+)' extra \((?P<package>\w+) is not installed\): "
    r"pip install 'transformers-self1e\[(?P=extra)\]'\n"
)


def run_self1e(arguments: list[str], workdir: Path, blocked=OPTIONAL_PACKAGES) -> subprocess.CompletedProcess:
    """`self1e ARGUMENTS` in a fresh interpreter, offline, in `workdir`, with the `blocked` packages absent."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf_home")}
    command = [sys.executable, "-c", _WITHOUT_PACKAGES, ",".join(blocked), *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, timeout=600)


def extra_packages(extra: str) -> set[str]:
    """The distributions an extra of pyproject.toml installs, following `transformers-self1e[other]` references."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    packages = set()
    for requirement in extras[extra]:
        name = re.match(r"[\w.-]+", requirement)[0]
        nested = re.fullmatch(r"transformers-self1e\[(\w+)\]", requirement)
        packages |= extra_packages(nested[1]) if nested else {name}
    return packages


# Each command's arguments (run in a temporary folder) and a file it must write there, if any; `push` checks a folder
# exported there first.
COMMANDS = {
    "demo": (["demo", "--out", "demo"], "demo/00-attribute-regular-overlay.png"),
    "segment": (["segment", str(DEMO_EXAMPLES / "00-attribute-regular.png"), "the circle", "--out", "m.png"], "m.png"),
    "evaluate": (["evaluate", "--dataset", "synthetic[:4]", "--out", "report.json"], "report.json"),
    "export": (["export", str(SHIPPED_MODEL), "--out", "hub"], "hub/config.json"),
    "push": (["push", "hub", "--repo-id", "someone/self1e-tiny", "--dry-run"], None),
}


def test_every_command_is_covered():
    subcommands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    # `app` and `predict` cannot run without their extras: test_app_names_the_extra_it_needs,
    # test_predict_names_the_extra_it_needs.
    assert set(subcommands.choices) == set(COMMANDS) | {"app", "predict"}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_runs_without_the_extras(command, tmp_path):
    arguments, output = COMMANDS[command]
    if command == "push":
        export_hub_folder(SHIPPED_MODEL, tmp_path / "hub")
    result = run_self1e(arguments, tmp_path)
    # Success, and quiet: stderr is not a terminal here, so no progress bars, and nothing else belongs there.
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    assert result.stdout and (output is None or (tmp_path / output).is_file())


@pytest.mark.slow
def test_saved_dataset_names_the_extra_it_needs(tmp_path):
    result = run_self1e(["evaluate", "--dataset", str(tmp_path), "--out", str(tmp_path / "report.json")], tmp_path)
    assert result.returncode == 2
    error = EXTRA_ERROR.fullmatch(result.stderr)
    assert error and error["package"] == "datasets" and "datasets" in extra_packages(error["extra"]), result.stderr
    assert not (tmp_path / "report.json").exists()


@pytest.mark.slow
def test_app_names_the_extra_it_needs(tmp_path):
    result = run_self1e(["app", "--port", "7860"], tmp_path, blocked=[*OPTIONAL_PACKAGES, "gradio"])
    assert result.returncode == 2
    error = EXTRA_ERROR.fullmatch(result.stderr)
    assert error and error["package"] == "gradio" and "gradio" in extra_packages(error["extra"]), result.stderr


@pytest.mark.slow
def test_predict_names_the_extra_it_needs(tmp_path):
    # Predicted masks are written as COCO run-length encodings (pycocotools) in parquet shards (datasets).
    result = run_self1e(["predict", "--dataset", "synthetic[:2]", "--out", "pred"], tmp_path)
    assert result.returncode == 2
    error = EXTRA_ERROR.fullmatch(result.stderr)
    assert error and error["package"] in extra_packages(error["extra"]), result.stderr
    assert error["extra"] == "data" and not (tmp_path / "pred").exists()


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_quantize_names_the_extra_it_needs(tmp_path, scheme):
    # On the CPU, torchao quantizes (tests/test_quantization.py runs it); the refusal comes before anything is written.
    arguments = ["segment", str(DEMO_EXAMPLES / "00-attribute-regular.png"), "the circle", "--quantize", scheme]
    result = run_self1e([*arguments, "--out", "m.png"], tmp_path, blocked=[*OPTIONAL_PACKAGES, "torchao"])
    assert result.returncode == 2
    error = EXTRA_ERROR.fullmatch(result.stderr)
    assert error and error["package"] == "torchao" and "torchao" in extra_packages(error["extra"]), result.stderr
    # Placing quantized weights while loading (`device_map`) needs accelerate, which the plain install lacks.
    assert "accelerate" in extra_packages(error["extra"])
    assert f"--quantize {scheme}" in result.stderr and not (tmp_path / "m.png").exists()


@pytest.mark.slow
def test_run_length_masks_name_the_extra_they_need(tmp_path):
    """A saved dataset (read with `datasets`) whose masks are COCO RLEs: decoding them is what needs pycocotools."""
    pytest.importorskip("pycocotools")
    gt = np.asarray(PIL.Image.open(DEMO_EXAMPLES / "00-attribute-regular-gt.png")) > 0
    image = DEMO_EXAMPLES / "00-attribute-regular.png"
    row = segmentation_row(image, "the circle", encode_rle(gt), "referring", "demo", random.Random(0))
    rows_to_dataset([row]).save_to_disk(tmp_path / "saved")
    arguments = ["evaluate", "--dataset", str(tmp_path / "saved"), "--out", str(tmp_path / "report.json")]
    result = run_self1e(arguments, tmp_path, blocked=["pycocotools"])
    assert result.returncode == 2
    error = EXTRA_ERROR.fullmatch(result.stderr)
    assert error and error["package"] == "pycocotools" and "pycocotools" in extra_packages(error["extra"])


@pytest.mark.slow
def test_wheel_installs_hub_upload_and_modeling_as_subpackages(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("src", "modeling", "hub_upload"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", str(source)]
    subprocess.run([*command, "--wheel-dir", str(tmp_path / "dist")], check=True, cwd=tmp_path, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("hub_upload", "modeling"):
        shipped = {path.name for path in (REPO / folder).iterdir() if path.suffix in (".py", ".md")}
        assert {f"transformers_self1e/{folder}/{name}" for name in shipped} <= names


def test_hub_upload_runs_from_a_checkout():
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "hub_upload", "export", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0 and "usage: python -m hub_upload export" in result.stdout
