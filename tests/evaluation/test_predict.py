"""`self1e predict`: every target's mask as COCO RLE in parquet shards that `datasets` loads; a rerun resumes, a killed
run of two processes ends, once rerun, with the files of an uninterrupted run; folders that are not its own are left
alone."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from helpers.launch import run_bounded, two_process_self1e

from transformers_self1e import Self1EForSegmentation, Self1EProcessor, cli
from transformers_self1e.cli import main
from transformers_self1e.data import SyntheticConfig, SyntheticReferringRows, decode_rle
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.evaluation.predict import (
    SHARD_PATTERN,
    check_prediction_folder,
    predict_dataset,
    prediction_run,
    shard_file,
)
from transformers_self1e.evaluation.sharded import plan_shards

KILLED_WORKER = Path(__file__).with_name("predict_killed_worker.py")
SHARDS = [
    "predictions-00000-of-00003.parquet",
    "predictions-00001-of-00003.parquet",
    "predictions-00002-of-00003.parquet",
]


def predict(out, *options: str, rows: int = 5, shard_size: int = 2) -> list[str]:
    return [
        "predict",
        "--dataset",
        f"synthetic[:{rows}]",
        "--shard-size",
        str(shard_size),
        "--out",
        str(out),
        *options,
    ]


def folder_files(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def shipped():
    return Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval(), Self1EProcessor.from_pretrained(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A finished run of 5 rows in shards of 2, and its files."""
    out = tmp_path_factory.mktemp("predicted") / "out"
    assert main(predict(out, "--threshold", "0.4")) == 0
    return out, folder_files(out)


def test_every_target_mask_is_the_mask_segment_gives(shipped, predicted):
    model, processor = shipped
    out, files = predicted
    assert sorted(files) == ["predict.json", *SHARDS]
    run = json.loads(files["predict.json"])
    assert run["files"] == SHARDS and run["num_rows"] == 5 and run["threshold"] == 0.4

    records = load_dataset("parquet", data_files=str(out / "predictions-*.parquet"), split="train")
    rows = SyntheticReferringRows(5, seed=1, config=SyntheticConfig(image_size=model.config.tile_size))
    assert records["row"] == list(range(5)) and records["target"] == [0] * 5
    assert records["expression"] == [row["expression"] for row in rows]
    for record, row in zip(records, rows):
        expected = model.segment(row["image"], [row["expression"]], processor=processor, threshold=0.4)
        assert np.array_equal(decode_rle(record["mask"]), expected.masks[0].numpy()), f"row {record['row']}"
        assert record["no_target"] == bool(expected.no_target[0])
        assert record["score"] == pytest.approx(float(expected.scores[0]), abs=1e-6)


def test_a_rerun_writes_only_the_missing_shards(predicted, tmp_path, capsys, monkeypatch):
    _, files = predicted
    out = tmp_path / "out"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    (out / SHARDS[1]).unlink()
    (out / f".{SHARDS[1]}.partial").write_bytes(b"killed while writing")
    (out / "notes.txt").write_text("mine")  # a resumed folder keeps what else it holds
    kept = {name: (out / name).stat().st_mtime_ns for name in (SHARDS[0], SHARDS[2])}
    time.sleep(0.01)

    assert main(predict(out, "--threshold", "0.4")) == 0
    assert "1 of 3 shards written, 2 already there" in capsys.readouterr().out
    assert folder_files(out) == {**files, "notes.txt": b"mine"}
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded for a finished run")

    monkeypatch.setattr(cli, "load_model_and_processor", no_loading)
    assert main(predict(out, "--threshold", "0.4")) == 0
    assert "all 3 shards are already there" in capsys.readouterr().out


def test_a_folder_of_something_else_is_refused_unless_overwrite(predicted, tmp_path, capsys):
    _, files = predicted
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(predict(out, "--threshold", "0.4")) == 2
    assert "is not empty and it holds no predict.json" in capsys.readouterr().err
    assert folder_files(out) == {"notes.txt": b"mine"}

    assert main(predict(out, "--threshold", "0.4", "--overwrite")) == 0
    assert folder_files(out) == {**files, "notes.txt": b"mine"}


def test_another_run_is_refused_and_overwrite_replaces_only_its_files(predicted, tmp_path, capsys):
    _, files = predicted
    out = tmp_path / "out"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)
    (out / "notes.txt").write_text("mine")
    other_run = predict(out, "--threshold", "0.4", rows=4, shard_size=1)
    assert main(other_run) == 2
    assert "holds a predict run with another dataset, num_rows, shard_size" in capsys.readouterr().err
    assert folder_files(out) == {**files, "notes.txt": b"mine"}

    assert main([*other_run, "--overwrite"]) == 0
    names = sorted(folder_files(out))
    assert names == ["notes.txt", "predict.json"] + [f"predictions-0000{index}-of-00004.parquet" for index in range(4)]
    assert json.loads((out / "predict.json").read_text())["shard_size"] == 1


def test_overwrite_never_replaces_a_file_predict_did_not_write(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / SHARDS[0]).write_bytes(b"someone else's")
    assert main(predict(out, "--overwrite")) == 2
    assert f"holds {SHARDS[0]}, which predict did not write" in capsys.readouterr().err
    assert folder_files(out) == {SHARDS[0]: b"someone else's"}


@pytest.mark.slow
def test_a_killed_two_process_run_rerun_ends_with_the_files_of_an_uninterrupted_run(tmp_path):
    """Each worker of the first run kills itself (SIGKILL) once it has written a shard (`predict_killed_worker.py`),
    and the launcher then stops the other; the rerun is the plain command on two processes."""
    num_rows = 8
    arguments = predict(tmp_path / "killed", rows=num_rows, shard_size=1)
    interrupted = run_bounded(two_process_self1e(arguments, script=KILLED_WORKER))
    assert interrupted.returncode != 0
    finished = list((tmp_path / "killed").glob("predictions-*.parquet"))
    assert 1 <= len(finished) <= 2, interrupted.stderr[-4000:]

    result = run_bounded(two_process_self1e(arguments))
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"{num_rows - len(finished)} of {num_rows} shards written, {len(finished)} already there" in result.stdout

    assert main(predict(tmp_path / "uninterrupted", rows=num_rows, shard_size=1)) == 0
    killed, uninterrupted = folder_files(tmp_path / "killed"), folder_files(tmp_path / "uninterrupted")
    assert len(killed) == num_rows + 1 and killed == uninterrupted
    assert not [name for name in os.listdir(tmp_path / "killed") if name.endswith(".partial")]


def test_a_shard_of_rows_without_targets_is_an_empty_file_datasets_reads(shipped, tmp_path):
    model, processor = shipped
    rows = list(SyntheticReferringRows(3, seed=1, config=SyntheticConfig(image_size=model.config.tile_size)))
    question = {"image": rows[0]["image"], "expressions": [], "masks": []}  # a VQA row: nothing to segment
    dataset = [rows[0], question, question, rows[2]]
    shards = plan_shards(len(dataset), 1)
    run = prediction_run({"dataset": "in memory"}, shards)
    out = tmp_path / "out"
    check_prediction_folder(out, run)
    assert predict_dataset(model, processor, dataset, out, run, shards) == shards

    records = load_dataset("parquet", data_files=str(out / SHARD_PATTERN), split="train")
    assert records["row"] == [0, 3] and records["expression"] == [rows[0]["expression"], rows[2]["expression"]]
    assert pq.read_metadata(out / shard_file(shards[1])).num_rows == 0


def test_a_run_file_naming_other_files_is_not_a_predict_run(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    forged = {"format": "transformers-self1e predictions", "files": ["notes.txt"]}
    files = {"predict.json": json.dumps(forged).encode(), "notes.txt": b"mine"}
    for name, content in files.items():
        (out / name).write_bytes(content)
    assert main(predict(out)) == 2
    assert "holds no predict.json of a predict run" in capsys.readouterr().err
    assert main(predict(out, "--overwrite")) == 2
    assert "holds predict.json, which predict did not write" in capsys.readouterr().err
    assert folder_files(out) == files
