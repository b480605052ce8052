"""`accelerate launch` of two CPU processes (gloo) from a test, bounded in time."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CPU_TWO_PROCESSES = ROOT / "examples" / "accelerate" / "cpu_2proc.yaml"
TIMEOUT_S = 240
ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_process_self1e(arguments: list[str], script: Path | None = None) -> list[str]:
    """`accelerate launch` of `python -m transformers_self1e.cli ARGUMENTS` (or of `script ARGUMENTS`) on two CPU
    processes."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_TWO_PROCESSES)]
    program = [str(script)] if script else ["-m", "transformers_self1e.cli"]
    return [*launch, "--main_process_port", str(free_port()), *program, *arguments]


def start(command: list[str]) -> subprocess.Popen:
    """Starts `command` in its own process group (see [`kill`]), stdout and stderr to pipes."""
    return subprocess.Popen(
        command,
        env=os.environ | ENVIRONMENT,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill(process: subprocess.Popen) -> None:
    """Kills `process` and every process it started (the launcher's workers), at once."""
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def run_bounded(command: list[str]) -> subprocess.CompletedProcess:
    """Runs `command`; all of it is killed after `TIMEOUT_S` (a collective that one process never joins hangs)."""
    process = start(command)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(process)
        pytest.fail(f"{command[-8:]} did not finish within {TIMEOUT_S} s")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
