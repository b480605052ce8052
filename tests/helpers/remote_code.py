"""Running a script in a fresh interpreter where `transformers_self1e` cannot be imported, as on a user's machine
that only has torch and transformers: everything must come from a saved folder's remote code."""

import subprocess
import sys
import textwrap
from pathlib import Path

_BLOCK_PACKAGE = '''
import sys


class _BlockPackage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "transformers_self1e":
            raise ImportError("transformers_self1e is blocked in this test")


sys.meta_path.insert(0, _BlockPackage())
'''


def run_without_package(script: str, workdir: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `script` (dedented) offline with an empty Hugging Face cache under `workdir`."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "hf_home"), "PATH": "/usr/bin:/bin"}
    code = _BLOCK_PACKAGE + textwrap.dedent(script)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
