"""Running a script in a fresh interpreter where `transformers_self1e` cannot be imported, as on a user's machine
that only has torch and transformers: everything must come from a saved folder's remote code."""

import inspect
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from transformers_self1e.hub_upload import package_blocker

# The script of the subprocess starts with the blocker that `hub_upload/load_check.py` runs under.
_BLOCK_PACKAGE = inspect.getsource(package_blocker) + "\nblock_package()\n"

# What transformers prints when it asks whether to run a folder's code, and when it reads a folder's config with a
# plain `PretrainedConfig` (what its `AutoTokenizer` falls back to after that question is refused or times out).
TRUST_QUESTION = "Do you wish to run the custom code"
MODEL_TYPE_WARNING = "You are using a model of type"


def run_without_package(
    script: str, workdir: Path, timeout: int = 300, hf_home: Path | None = None
) -> subprocess.CompletedProcess:
    """Runs `script` (dedented) offline with an empty Hugging Face cache under `workdir` (or the cache `hf_home`).

    Its stdin is a pipe nobody writes to, like a terminal where nobody answers: a question waits (until
    transformers gives up) instead of reading end-of-file. Raises `subprocess.TimeoutExpired`, with the output so
    far, after `timeout` seconds.
    """
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home or workdir / "hf_home"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", _BLOCK_PACKAGE + textwrap.dedent(script)]
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=env, text=True)
        try:
            returncode = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            output = _read_from_start(stdout), _read_from_start(stderr)
            raise subprocess.TimeoutExpired(command, timeout, output=output[0], stderr=output[1]) from None
        finally:
            process.stdin.close()
        return subprocess.CompletedProcess(command, returncode, _read_from_start(stdout), _read_from_start(stderr))


def _read_from_start(file) -> str:
    file.seek(0)
    return file.read()
