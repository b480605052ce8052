"""segment() for one image and one prompt (and for 4 images) against the floor, a plain InternVLModel forward over
the same tokens, and against a straightforward implementation users would write: a Python loop over samples, float
additive attention masks materialised per head, eager attention.

    python benchmarks/segment_latency.py [--device cuda] [--config tiny]
"""

import copy

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

FLOOR = "InternVLModel forward (floor)"


def straightforward_segment(model, input_ids: torch.Tensor, pixel_values: torch.Tensor) -> list[torch.Tensor]:
    """One sample at a time; the segmentation mask as a float (1, heads, L, L) tensor; eager attention."""
    config = model.config
    heads = config.text_config.num_attention_heads
    side = config.llm_grid_size
    masks = []
    for row in range(input_ids.shape[0]):
        ids = input_ids[row : row + 1]
        length = ids.shape[1]
        is_image = ids[0] == config.image_token_id
        is_seg = ids[0] == config.seg_token_id
        allowed = torch.ones(length, length).tril().bool()
        allowed |= is_image[:, None] & (is_image | is_seg)[None, :]
        additive = torch.zeros(1, heads, length, length, dtype=model.dtype, device=ids.device)
        additive.masked_fill_(~allowed.to(ids.device), torch.finfo(model.dtype).min)

        vision = model.model.vision_tower(pixel_values=pixel_values[row : row + 1]).last_hidden_state[:, 1:]
        grid = vision.reshape(1, 2 * side, 2 * side, -1)
        shuffled = model.model.pixel_shuffle(grid, 0.5).reshape(1, side * side, -1)
        projected = model.model.multi_modal_projector(shuffled)
        high_res = model.model.multi_modal_projector(torch.cat([vision] * 4, dim=-1))
        embeddings = model.get_input_embeddings()(ids).clone()
        embeddings[0, is_image] = projected[0]
        hidden = model.model.language_model(inputs_embeds=embeddings, attention_mask=additive).last_hidden_state
        model.lm_head(hidden)  # the full vocabulary logits a plain forward computes

        head = model.seg_head
        llm = hidden[0, is_image].reshape(1, side, side, -1)
        image_hidden, _ = head.image_hidden_states(
            llm, projected.reshape(1, side, side, -1), high_res.reshape(1, 2 * side, 2 * side, -1)
        )
        image_embeddings = head.output_mlp.fc2(image_hidden)
        seg_position = int(is_seg.nonzero()[0]) - 1
        seg = head.embed_seg(hidden[0, seg_position])
        masks.append(torch.einsum("hwd,d->hw", image_embeddings[0], seg) * head.scale)
    return masks


def main() -> None:
    args = parse_common_arguments(__doc__).parse_args()
    dtype = resolve_dtype(args)
    model, processor = build_model_and_processor(args, dtype)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    print(header(args, model, "segment(): one mask for the price of one forward pass"))

    rows = []
    for batch_size in (1, 4):
        rng = np.random.default_rng(batch_size)
        size = model.config.tile_size
        images = [random_image(size, size, rng) for _ in range(batch_size)]
        prompts = ["the red circle on the left"] * batch_size
        inputs = processor.prepare_segmentation_inputs(images, prompts)
        input_ids = inputs["input_ids"].to(args.device)
        attention_mask = inputs["attention_mask"].to(args.device)
        pixel_values = inputs["pixel_values"].to(args.device, dtype)

        def floor():
            with torch.inference_mode():
                model.model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)

        def ours():
            model.segment(images, prompts, processor=processor)

        def straightforward():
            with torch.inference_mode():
                straightforward_segment(eager, input_ids, pixel_values)

        results = interleaved(
            {FLOOR: floor, "segment()": ours, "straightforward": straightforward}, args.repeats, args.device
        )
        rows += comparison_rows(str(batch_size), results, FLOOR, lambda result: f"{result['seconds'] * 1000:.0f} ms")
    print(table(["batch", "implementation", "time", "vs floor", "peak memory", "vs floor"], rows))


if __name__ == "__main__":
    main()
