"""Quiet by default: progress bars for long work only and on a terminal only, and "n/a" rather than "nan" for a metric
without samples to average."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from helpers.pairs import random_image, tiny_model_and_processor
from transformers.utils import logging

from transformers_self1e import Self1EConfig
from transformers_self1e.cli import main
from transformers_self1e.data import SyntheticConfig, SyntheticReferringRows
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.evaluation import format_metric
from transformers_self1e.modeling.predictor import Self1EPredictor

SELF1E = Path(sys.executable).with_name("self1e")
TILE_SIZE = Self1EConfig.from_pretrained(SHIPPED_MODEL).tile_size
# The first two samples of seed 1 have a target each, so N-acc has nothing to average.
SAMPLES, SEED = 2, 1


@pytest.fixture
def progress_bars():
    """transformers' progress bars on, as they are by default, whatever earlier tests did."""
    was_enabled = logging.is_progress_bar_enabled()
    logging.enable_progress_bar()
    yield
    if not was_enabled:
        logging.disable_progress_bar()


def evaluate_command(out: Path, samples: int = SAMPLES) -> list[str]:
    """`self1e evaluate` of the first `samples` synthetic samples of `SEED` at the shipped model's tile size."""
    options = ["--seed", str(SEED), "--image-size", str(TILE_SIZE), "--out", str(out)]
    return [str(SELF1E), "evaluate", "--dataset", f"synthetic[:{samples}]", *options]


def offline_env(tmp_path: Path) -> dict[str, str]:
    return os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}


def test_metrics_without_samples_read_n_a():
    assert format_metric(float("nan")) == format_metric(None) == "n/a"
    assert format_metric(1 / 3) == "0.3333" and format_metric(2 / 3, 3) == "0.667"


@pytest.mark.slow
def test_evaluate_log_holds_the_summary_only(tmp_path):
    rows = SyntheticReferringRows(SAMPLES, SEED, SyntheticConfig(image_size=TILE_SIZE))
    assert not any(row["no_target"] for row in rows)
    out = tmp_path / "report.json"
    # As `self1e evaluate ... > log 2>&1`.
    result = subprocess.run(
        evaluate_command(out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=offline_env(tmp_path),
        timeout=300,
    )
    assert result.returncode == 0, result.stdout
    (summary,) = result.stdout.splitlines()
    assert "\r" not in result.stdout and "Loading weights" not in result.stdout
    assert not re.search(r"\bnan\b", summary, re.IGNORECASE) and "N-acc n/a" in summary
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["num_no_target"] == 0 and metrics["n_acc"] is None


@pytest.mark.slow
def test_a_terminal_gets_one_loading_line_and_the_evaluation_bar(tmp_path):
    primary, secondary = pty.openpty()
    # An 80-column terminal: tqdm draws nothing on one without a size.
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    command = evaluate_command(tmp_path / "report.json", samples=4)
    env = offline_env(tmp_path)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env)
    os.close(secondary)
    output = b""
    while select.select([primary], [], [], 300)[0]:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the command has exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(primary)
    assert process.wait(timeout=60) == 0
    # A bar redraws its own line with carriage returns; lines are what newlines separate.
    lines = output.decode().split("\n")
    assert sum("Loading weights" in line for line in lines) <= 1
    assert any("evaluating" in line and "4/4" in line for line in lines)


def test_segment_draws_a_bar_only_over_several_chunks(progress_bars, capsys):
    model, processor = tiny_model_and_processor()
    image = random_image(40, 40)
    # A one-token budget runs every prompt through the language model in a chunk of its own.
    predictor = Self1EPredictor(model, processor, max_batch_tokens=1)
    predictor.segment(image, "a dog", show_progress=True)
    assert capsys.readouterr().err == ""
    predictor.segment(image, ["a dog", "a cat", "a bird"], show_progress=True)
    assert "segmenting" in capsys.readouterr().err


def test_cli_turns_bars_off_without_a_terminal_and_back_on_after(progress_bars, tmp_path, capsys):
    assert main(evaluate_command(tmp_path / "report.json", samples=1)[1:]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "(1 samples)" in captured.out
    assert logging.is_progress_bar_enabled()
