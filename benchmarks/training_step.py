"""One training step (forward + backward + AdamW, LoRA on the language model) with the segmentation loss, against
the same batch as a text-only step ([SEG] replaced by an ordinary token: no mask head, causal attention).

    python benchmarks/training_step.py [--device cuda] [--config tiny] [--batch-sizes 1 4]
"""

import numpy as np
import torch
from common import (
    build_model_and_processor,
    comparison_rows,
    header,
    interleaved,
    parse_common_arguments,
    random_image,
    resolve_dtype,
    table,
)

from transformers_self1e.training import apply_lora, self1e_lora_config


def main() -> None:
    parser = parse_common_arguments(__doc__)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--lora-rank", type=int, default=64)
    args = parser.parse_args()
    dtype = resolve_dtype(args)
    base, processor = build_model_and_processor(args, dtype)
    base = base.train()
    model = apply_lora(base, self1e_lora_config(rank=args.lora_rank, alpha=2 * args.lora_rank, dropout=0.0))
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-5)
    print(header(args, base, "Training step, LoRA on the language model"))
    size = base.config.tile_size
    seg_id = base.config.seg_token_id

    rows = []
    for batch_size in args.batch_sizes:
        rng = np.random.default_rng(batch_size)
        images = [random_image(size, size, rng) for _ in range(batch_size)]
        inputs = processor.prepare_segmentation_inputs(images, ["the red circle"] * batch_size)
        input_ids = inputs["input_ids"].to(args.device)
        attention_mask = inputs["attention_mask"].to(args.device)
        pixel_values = inputs["pixel_values"].to(args.device, dtype)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        gt_masks = [torch.from_numpy(rng.random((1, size, size)) > 0.5).float().to(args.device) for _ in images]
        text_only_ids = input_ids.masked_fill(input_ids == seg_id, 0)

        def step(ids, masks):
            def run():
                outputs = model(
                    input_ids=ids,
                    attention_mask=attention_mask,
                    pixel_values=pixel_values,
                    labels=labels,
                    gt_masks=masks,
                )
                outputs.loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            return run

        results = interleaved(
            {"text only": step(text_only_ids, None), "with segmentation loss": step(input_ids, gt_masks)},
            args.repeats,
            args.device,
        )
        rows += comparison_rows(
            str(batch_size), results, "text only", lambda result: f"{batch_size / result['seconds']:.2f}"
        )
    print(table(["batch", "step", "samples/s", "time vs text only", "peak memory", "vs text only"], rows))


if __name__ == "__main__":
    main()
