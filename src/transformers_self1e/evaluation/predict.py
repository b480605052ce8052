"""The masks of a whole dataset, written shard by shard (`self1e predict`).

A prediction folder holds `predict.json`, which names the run (model, dataset, options), and one parquet file per
shard of rows (see `transformers_self1e.evaluation.sharded`), `predictions-00000-of-00012.parquet`, ..., with one
record per target: `row` (the dataset row), `target` (its index in the row), `expression`, `mask` (COCO RLE:
`{"size": [height, width], "counts": str}`, see `transformers_self1e.data.decode_rle`), `score` and `no_target`. The
shards load with `datasets.load_dataset("parquet", data_files="PRED_DIR/predictions-*.parquet", split="train")`.

Each shard is written beside its final name and renamed into place, so a finished shard is never partial; a rerun of
the same run skips the finished shards, so a killed run loses at most the shards in flight. The folder is otherwise
left alone: a folder that is not empty and not a run of the same model and dataset is refused unless `overwrite`, and
even then only the files of predict runs are replaced.
"""

import fnmatch
import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers.utils import logging

from ..data.masks import encode_rle
from .sharded import InferenceProcesses, Shard, segment_shard

if TYPE_CHECKING:
    import datasets

RUN_FILE = "predict.json"
RUN_FORMAT = "transformers-self1e predictions"
SHARD_FILE = "predictions-{index:05d}-of-{count:05d}.parquet"
SHARD_PATTERN = "predictions-*.parquet"
PARTIAL_PREFIX = "."
PARTIAL_SUFFIX = ".partial"


def shard_file(shard: Shard) -> str:
    return SHARD_FILE.format(index=shard.index, count=shard.count)


def partial_file(name: str) -> str:
    """The name a file is written under before it is renamed to `name`."""
    return f"{PARTIAL_PREFIX}{name}{PARTIAL_SUFFIX}"


def prediction_run(identity: Mapping[str, Any], shards: Sequence[Shard]) -> dict:
    """The content of `predict.json` for a run: `identity` (what the masks depend on: model, dataset, options; JSON
    values) and the shard files."""
    return {"format": RUN_FORMAT, **identity, "files": [shard_file(shard) for shard in shards]}


def _read_run(out: Path) -> dict | None:
    """The `predict.json` of `out`, None when it has none or one that is not a predict run's."""
    try:
        run = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT or not isinstance(run.get("files"), list):
        return None
    # Its files are deleted by a run that overwrites it: only shard names in the folder itself are taken.
    if not all(isinstance(name, str) and fnmatch.fnmatchcase(name, SHARD_PATTERN) for name in run["files"]):
        return None
    return run


def check_prediction_folder(out: str | Path, run: Mapping[str, Any], overwrite: bool = False) -> None:
    """Checks that the run `run` (see [`prediction_run`]) may write to `out`; meant to run before the model loads.

    `out` may be missing, empty, or hold a run equal to `run` (which is resumed). With `overwrite`, a folder holding
    something else is accepted as long as no file that `run` would write is one a predict run did not write.

    Raises:
        ValueError: `out` is a file, or `overwrite` would replace a file predict did not write.
        FileExistsError: `out` is not empty and not a run equal to `run`, and `overwrite` is false.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file, not a folder")
    existing = sorted(path.name for path in out.iterdir()) if out.is_dir() else []
    if not existing:
        return
    previous = _read_run(out)
    if previous == dict(run):
        return
    if not overwrite:
        if previous is None:
            reason = f"it holds no {RUN_FILE} of a predict run"
        else:
            # The shard files follow from the other values; they are named only when nothing else differs.
            changed = [key for key in sorted({*previous, *run}) if previous.get(key) != run.get(key)]
            named = [key for key in changed if key != "files"] or changed
            reason = f"it holds a predict run with another {', '.join(named)}"
        raise FileExistsError(
            f"{out} is not empty and {reason}: choose a new folder, or pass --overwrite to replace the predict "
            "files in it (other files are kept)"
        )
    ours = {RUN_FILE, *(previous["files"] if previous else [])}
    foreign = sorted(name for name in run["files"] if name in existing and name not in ours)
    if RUN_FILE in existing and previous is None:
        foreign.insert(0, RUN_FILE)
    if foreign:
        raise ValueError(
            f"{out} holds {', '.join(foreign[:3])}, which predict did not write and would replace: move them away"
        )


def prepare_prediction_folder(out: str | Path, run: Mapping[str, Any]) -> None:
    """Makes `out` ready for `run` after [`check_prediction_folder`]: removes the files of another predict run
    there and the partial shards of an interrupted one, and writes `predict.json`. Run it on one process only."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    previous = _read_run(out)
    if previous is not None and previous != dict(run):
        for name in previous["files"]:
            (out / name).unlink(missing_ok=True)
    for name in {RUN_FILE, *run["files"], *(previous["files"] if previous else [])}:
        (out / partial_file(name)).unlink(missing_ok=True)
    if previous != dict(run):
        _write_beside_and_rename(out / RUN_FILE, lambda path: path.write_text(json.dumps(run, indent=2) + "\n"))


def pending_shards(out: str | Path, shards: Sequence[Shard]) -> list[Shard]:
    """The shards whose file is not in `out` yet."""
    return [shard for shard in shards if not (Path(out) / shard_file(shard)).is_file()]


def is_finished(out: str | Path, run: Mapping[str, Any], shards: Sequence[Shard]) -> bool:
    """Whether `out` holds the run `run` with every one of its shards."""
    return _read_run(Path(out)) == dict(run) and not pending_shards(out, shards)


def predict_dataset(
    model,
    processor,
    dataset: "datasets.Dataset | Sequence[Mapping]",
    out: str | Path,
    run: Mapping[str, Any],
    shards: Sequence[Shard],
    processes: InferenceProcesses | None = None,
    *,
    batch_size: int = 1,
    threshold: float = 0.5,
    images_kwargs: dict | None = None,
    show_progress: bool = False,
) -> list[Shard]:
    """Writes the masks of every target of `dataset` to `out`, one parquet file per shard, skipping the shards already
    there; every process of `processes` calls it and writes its share of the missing shards.

    Args:
        model, processor: the model on this process's device, and its processor.
        dataset: rows with an `image` and their targets (see `referring_targets`).
        out: the prediction folder, checked with [`check_prediction_folder`] (by every process, before loading the
            model).
        run: the run's `predict.json` content (see [`prediction_run`]).
        shards: the shards of `dataset` (`plan_shards`), the ones `run` names.
        processes: the processes of the run (default: this process alone).
        batch_size: rows per `segment()` call.
        threshold, images_kwargs: as in `evaluate_referring`.
        show_progress: show a progress bar over this process's shards (on the main process).

    Returns:
        The shards written by this call, on every process.
    """
    out = Path(out)
    processes = processes or InferenceProcesses()
    if processes.is_main_process:
        prepare_prediction_folder(out, run)
    processes.wait()
    pending = pending_shards(out, shards)
    processes.wait()  # every process has listed the same finished shards before any is added
    with processes.split(pending) as own_shards:
        show = show_progress and processes.is_main_process
        for shard in logging.tqdm(own_shards, desc="predicting", unit="shard", disable=not show):
            records = [
                record
                for index, _, targets, result in segment_shard(
                    model,
                    processor,
                    dataset,
                    shard,
                    batch_size=batch_size,
                    threshold=threshold,
                    images_kwargs=images_kwargs,
                )
                for record in _target_records(index, targets, result)
            ]
            _write_beside_and_rename(out / shard_file(shard), functools.partial(write_records, records))
    processes.wait()
    return pending


def _target_records(index: int, targets: list[tuple[str, Any]], result) -> list[dict]:
    scores, no_target = result.scores.tolist(), result.no_target.tolist()
    return [
        {
            "row": index,
            "target": target,
            "expression": expression,
            "mask": encode_rle(result.packed_masks.mask(target).numpy()),
            "score": scores[target],
            "no_target": no_target[target],
        }
        for target, (expression, _) in enumerate(targets)
    ]


def records_schema():
    """The parquet schema of a shard file."""
    import pyarrow as pa

    mask = pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])
    return pa.schema(
        [
            ("row", pa.int64()),
            ("target", pa.int32()),
            ("expression", pa.string()),
            ("mask", mask),
            ("score", pa.float32()),
            ("no_target", pa.bool_()),
        ]
    )


def write_records(records: list[dict], path: str | Path) -> None:
    """Writes target records (see the module docstring) to the parquet file `path`. A shard without records (rows
    without targets only) holds the schema and no row group: `datasets` refuses an empty row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = records_schema()
    with pq.ParquetWriter(path, schema) as writer:
        if records:
            writer.write_table(pa.Table.from_pylist(records, schema=schema))


def _write_beside_and_rename(path: Path, write) -> None:
    """Calls `write(partial)` on a file beside `path`, then renames it to `path`: `path` is never partial."""
    partial = path.with_name(partial_file(path.name))
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


__all__ = [
    "RUN_FILE",
    "SHARD_PATTERN",
    "check_prediction_folder",
    "is_finished",
    "pending_shards",
    "predict_dataset",
    "prediction_run",
    "prepare_prediction_folder",
    "shard_file",
    "write_records",
]
