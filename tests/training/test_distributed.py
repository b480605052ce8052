"""DDP on two CPU processes (gloo) through `accelerate launch`: batches without [SEG] on one rank, identical weights."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.pairs import tiny_model_and_processor
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "accelerate" / "cpu_2proc.yaml"
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_bounded(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Runs `command` in its own process group, all of which is killed after `TIMEOUT_S` (a DDP hang never ends)."""
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the two processes did not finish within {TIMEOUT_S} s:\n{stderr[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_ddp_keeps_ranks_identical_when_one_rank_has_no_seg_token(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIG),
        "--main_process_port", str(free_port()),
        str(WORKER), str(tmp_path),
    ]  # fmt: skip
    environment = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = run_bounded(command, environment)
    assert result.returncode == 0, result.stderr[-4000:]

    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [report["world_size"] for report in reports] == [2, 2]
    assert all(report["find_unused_parameters"] is True for report in reports)
    # Rank 0 reads the referring samples, rank 1 only VQA ones: the seg head gets no gradient there.
    assert all(count == 1 for count in reports[0]["seg_counts"][:3])
    assert all(count == 0 for count in reports[1]["seg_counts"][:3])
    step_logs = [entry for entry in reports[0]["logs"] if "loss" in entry]
    assert len(step_logs) == 3 and all("mask_bce_loss" in entry for entry in step_logs)

    weights = [load_file(tmp_path / f"rank{rank}.safetensors") for rank in range(2)]
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    initial = tiny_model_and_processor()[0].state_dict()
    for name in ("seg_head.output_mlp.fc2.weight", "model.multi_modal_projector.linear_1.weight", "lm_head.weight"):
        assert not torch.equal(weights[0][name], initial[name]), f"{name} was not trained"
