"""Evaluation shared between processes: shards cover every row once and in order, and the report of two processes
(`accelerate launch`, gloo) equals the report of one, including when the rows and shards do not divide by two."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from helpers.launch import run_bounded, two_process_self1e

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.cli import main
from transformers_self1e.data import SyntheticConfig, SyntheticReferringRows
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.evaluation import evaluate_referring
from transformers_self1e.evaluation.sharded import InferenceProcesses, evaluate_sharded, plan_shards, segment_shard


@pytest.fixture(scope="module")
def shipped():
    return Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval(), Self1EProcessor.from_pretrained(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def rows(shipped):
    model, _ = shipped
    rows = SyntheticReferringRows(5, seed=1, config=SyntheticConfig(image_size=model.config.tile_size))
    assert {row["no_target"] for row in rows} == {False, True}  # N-acc and T-acc both have samples
    return rows


def without_wall_time(report: dict) -> str:
    """The report as JSON text (NaN spelled alike), without the one value that differs from run to run."""
    return json.dumps({key: value for key, value in report.items() if key != "wall_time_s"}, sort_keys=True)


@pytest.mark.parametrize("num_rows", [0, 1, 5, 6, 11])
@pytest.mark.parametrize("shard_size", [1, 2, 5])
def test_shards_cover_every_row_once_in_order(num_rows, shard_size):
    shards = plan_shards(num_rows, shard_size)
    assert [row for shard in shards for row in range(shard.start, shard.stop)] == list(range(num_rows))
    assert len(shards) == math.ceil(num_rows / shard_size)
    assert [shard.index for shard in shards] == list(range(len(shards)))
    assert all(shard.count == len(shards) and shard.num_rows == shard_size for shard in shards[:-1])


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_bad_shard_and_batch_sizes_are_refused(shipped, rows, size):
    with pytest.raises(ValueError, match="shard_size must be a positive integer"):
        plan_shards(4, size)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(segment_shard(*shipped, rows, plan_shards(4, 2)[0], batch_size=size))


def test_one_process_is_this_process():
    processes = InferenceProcesses()
    assert (processes.num_processes, processes.process_index, processes.is_main_process) == (1, 0, True)
    with processes.split([3, 4, 5]) as share:
        assert share == [3, 4, 5]
    assert processes.gather([1, 2]) == [1, 2] and processes.device("cuda:1") == "cuda:1"


def test_each_of_several_processes_takes_its_own_accelerator():
    state = SimpleNamespace(num_processes=2, process_index=1, device=torch.device("cuda", 1))
    processes = InferenceProcesses(state)
    assert processes.device("cuda") == "cuda:1" and processes.device("cpu") == "cpu"
    assert not processes.is_main_process
    with pytest.raises(ValueError, match="names one device for 2 processes: give --device cuda"):
        processes.device("cuda:0")
    with pytest.raises(ValueError, match="--device xpu but this process was launched on cuda:1"):
        processes.device("xpu")


def test_sharded_report_equals_evaluate_referring(shipped, rows):
    """One row per `segment()` call, as `evaluate_referring` segments: the same masks, scored in the same order."""
    model, processor = shipped
    expected = evaluate_referring(model, processor, rows, threshold=0.4)
    for shard_size in (2, 100):
        report = evaluate_sharded(model, processor, rows, shard_size=shard_size, threshold=0.4)
        assert without_wall_time(report) == without_wall_time(expected), f"shard_size={shard_size}"
        assert report["metrics"]["num_samples"] == len(rows) and report["wall_time_s"] > 0


def test_batches_of_rows_segment_each_row_as_alone(shipped, rows):
    model, processor = shipped
    (shard,) = plan_shards(len(rows), len(rows))
    batched = list(segment_shard(model, processor, rows, shard, batch_size=3))
    assert [index for index, *_ in batched] == list(range(len(rows)))
    for index, row, targets, result in batched:
        alone = model.segment(row["image"], [targets[0][0]], processor=processor)
        assert (result.masks == alone.masks).all(), f"row {index}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("num_rows", "batch_size", "shard_size"),
    [(5, 2, 2)],  # 3 shards: the second round has a shard for one process only
)
def test_two_processes_report_what_one_process_reports(tmp_path, num_rows, batch_size, shard_size):
    arguments = ["evaluate", "--dataset", f"synthetic[:{num_rows}]", "--threshold", "0.4"]
    arguments += ["--batch-size", str(batch_size), "--shard-size", str(shard_size)]
    assert main([*arguments, "--out", str(tmp_path / "one.json")]) == 0

    result = run_bounded(two_process_self1e([*arguments, "--out", str(tmp_path / "two.json")]))
    assert result.returncode == 0, result.stderr[-4000:]
    # Only the main process reports: one summary line, one report.
    assert result.stdout.count("cIoU") == 1 and sorted(path.name for path in tmp_path.iterdir()) == [
        "one.json",
        "two.json",
    ]
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert one["metrics"]["num_samples"] == num_rows
    assert without_wall_time(two) == without_wall_time(one)
