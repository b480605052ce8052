"""Packages installed for one test's subprocesses only, outside the test environment: torchao, for instance, is
imported by transformers as soon as it is installed (and prints to stderr), which the quietness tests would see.

Installed once with pip into `$SELF1E_TRANSFORMERS_TESTS_CACHE` (by default `~/.cache/transformers-self1e`), from the
package registry; a failed install is an error, not a skip.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from helpers.transformers_common import cache_root

# The torchao that the quantization tests run with.
TORCHAO = "torchao==0.18.0"


def isolated_package(requirement: str) -> Path:
    """A folder to put on `PYTHONPATH` that holds `requirement` (e.g. `"torchao==0.18.0"`, without its dependencies)."""
    target = cache_root() / f"isolated-{requirement.replace('==', '-')}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging)]
        result = subprocess.run([*command, requirement], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"could not install {requirement}:\n{result.stderr[-2000:]}")
        (staging / ".complete").write_text(requirement)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def environment_with(folder: Path) -> dict[str, str]:
    """This process's environment with `folder` first on `PYTHONPATH`."""
    paths = [str(folder), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
