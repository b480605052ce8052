"""Worker of `test_distributed.py`, one process per rank under `accelerate launch`: trains the tiny model three DDP
steps on alternating referring / VQA samples (so that rank 1 only ever sees batches without `[SEG]`), then writes its
weights to `OUT/rank{rank}.safetensors` and what it saw to `OUT/rank{rank}.json`.

    accelerate launch --config_file examples/accelerate/cpu_2proc.yaml tests/training/distributed_worker.py OUT
"""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file
from transformers import TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for `helpers`
from helpers.pairs import random_image, tiny_model_and_processor

from transformers_self1e.data import SyntheticConfig, make_synthetic_referring_dataset
from transformers_self1e.training import Self1EDataCollator, Self1ETrainer


class RecordingCollator(Self1EDataCollator):
    """Remembers how many `[SEG]` tokens each batch of this rank holds."""

    seg_counts: list[int]

    def __call__(self, samples):
        batch = super().__call__(samples)
        self.seg_counts.append(int((batch["input_ids"] == self.processor.seg_token_id).sum()))
        return batch


def main(out_dir: Path) -> None:
    model, processor = tiny_model_and_processor()
    referring = list(make_synthetic_referring_dataset(3, seed=0, config=SyntheticConfig(image_size=112)))
    vqa = [
        {"image": random_image(112, 112, seed=index), "prompt": "What is there?", "answer": "Shapes."}
        for index in range(3)
    ]
    samples = [sample for pair in zip(referring, vqa) for sample in pair]
    args = TrainingArguments(
        output_dir=str(out_dir / "trainer"),
        max_steps=3,
        per_device_train_batch_size=1,
        learning_rate=1e-3,
        train_sampling_strategy="sequential",
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    collator = RecordingCollator(processor)
    collator.seg_counts = []
    trainer = Self1ETrainer(model=model, args=args, train_dataset=samples, data_collator=collator)
    trainer.train()

    rank = trainer.accelerator.process_index
    save_file(
        {name: tensor.contiguous() for name, tensor in model.state_dict().items()}, out_dir / f"rank{rank}.safetensors"
    )
    report = {
        "world_size": trainer.accelerator.num_processes,
        "find_unused_parameters": args.ddp_find_unused_parameters,
        "seg_counts": collator.seg_counts,
        "logs": trainer.state.log_history,
    }
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
