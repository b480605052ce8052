"""Inference over a dataset cut into shards of consecutive rows, shared by the processes `accelerate launch` starts
(this process alone without it).

The shards, and the batches of rows inside each shard that go through `segment()` together, depend only on the
dataset length, `shard_size` and `batch_size`, never on the number of processes, so every mask is computed from the
same batch however many processes share the work. [`evaluate_sharded`] gathers each round of shards on the main
process, which scores the rows in dataset order: its report equals the one-process report. `self1e predict` writes
each shard to its own file (see `transformers_self1e.evaluation.predict`).
"""

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers.utils import logging

from ..data.masks import to_binary_mask
from ..modeling.mask_postprocessing import PackedMasks
from ..modeling.predictor import SegmentationResult
from .evaluate import BREAKDOWN_COLUMNS, ReferringScores, referring_targets

if TYPE_CHECKING:
    import datasets

DEFAULT_SHARD_SIZE = 100
# Environment variables through which launchers (torchrun / accelerate, MPI) give the number of processes.
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class Shard:
    """Rows `start` to `stop - 1` of a dataset, the `index`-th of `count` shards."""

    index: int
    count: int
    start: int
    stop: int

    @property
    def num_rows(self) -> int:
        return self.stop - self.start


def plan_shards(num_rows: int, shard_size: int) -> list[Shard]:
    """`num_rows` rows cut into shards of `shard_size` consecutive rows (the last one shorter)."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    starts = range(0, num_rows, shard_size)
    return [Shard(index, len(starts), start, min(start + shard_size, num_rows)) for index, start in enumerate(starts)]


def launched_world_size() -> int:
    """The number of processes a launcher started, read from its environment (1 without a launcher)."""
    for variable in WORLD_SIZE_VARIABLES:
        if os.environ.get(variable):
            return int(os.environ[variable])
    return 1


class InferenceProcesses:
    """The processes sharing one inference run: accelerate's `PartialState` when accelerate is installed (it reads
    what `accelerate launch`, torchrun or MPI set up), this process alone when it is not.

    Args:
        state: an `accelerate.PartialState`, or None for a single process without accelerate.
    """

    def __init__(self, state: Any = None):
        self._state = state

    @classmethod
    def start(cls, device: str) -> "InferenceProcesses":
        """The processes of this run, with gloo between them when `device` is the CPU.

        Raises:
            ModuleNotFoundError: a launcher started several processes but accelerate (the `train` extra) is missing.
        """
        try:
            from accelerate import PartialState
        except ModuleNotFoundError:
            if launched_world_size() > 1:
                raise
            return cls()
        return cls(PartialState(cpu=torch.device(device).type == "cpu"))

    @property
    def num_processes(self) -> int:
        return 1 if self._state is None else self._state.num_processes

    @property
    def process_index(self) -> int:
        return 0 if self._state is None else self._state.process_index

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def device(self, requested: str) -> str:
        """The device this process runs on: `requested`, or with several processes on accelerators, this process's
        own accelerator of that type (`cuda` becomes `cuda:LOCAL_RANK`)."""
        wanted = torch.device(requested)
        if self.num_processes == 1 or wanted.type == "cpu":
            return requested
        if wanted.index is not None:
            raise ValueError(
                f"--device {requested} names one device for {self.num_processes} processes: give --device "
                f"{wanted.type}, and each process takes its own"
            )
        own = self._state.device
        if own.type != wanted.type:
            raise ValueError(f"--device {requested} but this process was launched on {own}")
        return str(own)

    @contextlib.contextmanager
    def split(self, items: list) -> Iterator[list]:
        """This process's consecutive share of `items` (`PartialState.split_between_processes`)."""
        if self._state is None:
            yield items
            return
        with self._state.split_between_processes(items) as share:
            yield share

    def gather(self, items: list) -> list:
        """Every process's `items`, concatenated in process order, on every process."""
        if self.num_processes == 1:
            return items
        from accelerate.utils import gather_object

        return gather_object(items)

    def wait(self) -> None:
        """Returns when every process has reached this point."""
        if self.num_processes > 1:
            self._state.wait_for_everyone()

    def close(self) -> None:
        """Leaves the process group: a process that exits with gloo's threads still running aborts ("terminate called
        without an active exception"), which fails the launch even though the work is done."""
        if self.num_processes > 1:
            self._state.destroy_process_group()


def segment_shard(
    model,
    processor,
    dataset: "datasets.Dataset | Sequence[Mapping]",
    shard: Shard,
    *,
    batch_size: int = 1,
    threshold: float = 0.5,
    images_kwargs: dict | None = None,
) -> Iterator[tuple[int, Mapping, list[tuple[str, Any]], SegmentationResult]]:
    """Segments the targets of every row of `shard`, `batch_size` rows per `segment()` call (rows without targets,
    such as VQA rows, are skipped and take no place in a batch).

    Yields:
        `(row_index, row, targets, result)` in row order: the row, its `(expression, mask)` targets (see
        `referring_targets`) and the `SegmentationResult` with one mask per target.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    for batch_start in range(shard.start, shard.stop, batch_size):
        batch = []
        for index in range(batch_start, min(batch_start + batch_size, shard.stop)):
            row = dataset[index]
            targets = referring_targets(row)
            if targets:
                batch.append((index, row, targets))
        if not batch:
            continue
        images = [row["image"] for _, row, _ in batch]
        prompts = [[expression for expression, _ in targets] for _, _, targets in batch]
        results = model.segment(images, prompts, processor=processor, threshold=threshold, **(images_kwargs or {}))
        for (index, row, targets), result in zip(batch, results):
            yield index, row, targets, result


@dataclass
class ScoredRow:
    """What the main process needs to score one row: its predicted and ground-truth masks at one bit per pixel, and
    its values of the breakdown columns."""

    breakdown: dict[str, Any]
    predictions: PackedMasks
    ground_truths: list[PackedMasks]

    def prediction_masks(self) -> list[torch.Tensor]:
        return list(self.predictions.unpack())

    def ground_truth_masks(self) -> list[torch.Tensor]:
        return [packed.mask(0).float() for packed in self.ground_truths]


def evaluate_sharded(
    model,
    processor,
    dataset: "datasets.Dataset | Sequence[Mapping]",
    processes: InferenceProcesses | None = None,
    *,
    batch_size: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    threshold: float = 0.5,
    breakdown_columns: Sequence[str] = BREAKDOWN_COLUMNS,
    images_kwargs: dict | None = None,
    show_progress: bool = False,
) -> dict | None:
    """[`evaluate_referring`] with the rows shared by `processes`: each process segments its shards, the masks of
    each round of shards (one per process) are gathered, and the main process scores them in row order.

    Args:
        model, processor: the model on this process's device, and its processor.
        dataset: rows with an `image` and their targets (see [`referring_targets`]); every process holds all of it.
        processes: the processes of the run (default: this process alone).
        batch_size: rows per `segment()` call.
        shard_size: rows per shard.
        threshold, breakdown_columns, images_kwargs: as in [`evaluate_referring`].
        show_progress: show a progress bar over the rows (on the main process).

    Returns:
        On the main process, the report of [`evaluate_referring`] (`metrics`, `breakdown`, `num_images`,
        `wall_time_s`), the same whatever the number of processes; None on the others.
    """
    start = time.perf_counter()
    processes = processes or InferenceProcesses()
    shards = plan_shards(len(dataset), shard_size)
    scores = ReferringScores(breakdown_columns)
    show = show_progress and processes.is_main_process
    with logging.tqdm(total=len(dataset), desc="evaluating", unit="image", disable=not show) as progress:
        for first in range(0, len(shards), processes.num_processes):
            round_shards = shards[first : first + processes.num_processes]
            with processes.split(round_shards) as own_shards:
                rows = [
                    _scored_row(row, targets, result, breakdown_columns)
                    for shard in own_shards
                    for _, row, targets, result in segment_shard(
                        model,
                        processor,
                        dataset,
                        shard,
                        batch_size=batch_size,
                        threshold=threshold,
                        images_kwargs=images_kwargs,
                    )
                ]
            rows = processes.gather(rows)
            if processes.is_main_process:
                for row in rows:
                    scores.add_row(row.breakdown, row.prediction_masks(), row.ground_truth_masks())
            progress.update(sum(shard.num_rows for shard in round_shards))
    if not processes.is_main_process:
        return None
    return {**scores.compute(), "wall_time_s": time.perf_counter() - start}


def _scored_row(
    row: Mapping, targets: list[tuple[str, Any]], result: SegmentationResult, breakdown_columns: Sequence[str]
) -> ScoredRow:
    ground_truths = [PackedMasks.pack(to_binary_mask(mask).bool()[None]) for _, mask in targets]
    breakdown = {column: row[column] for column in breakdown_columns if column in row}
    return ScoredRow(breakdown, result.packed_masks, ground_truths)


__all__ = [
    "DEFAULT_SHARD_SIZE",
    "InferenceProcesses",
    "ScoredRow",
    "Shard",
    "evaluate_sharded",
    "plan_shards",
    "segment_shard",
]
