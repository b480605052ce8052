"""Where one `segment()` call spends its time: processor, vision tower (with the replicated projector), language
model with the segmentation head, attention-mask construction, against the plain InternVLModel forward.

    python benchmarks/segment_profile.py [--device cuda] [--config tiny|mid|internvl3-1b]
"""

import numpy as np
import PIL.Image
import torch
from common import build_model_and_processor, header, interleaved, parse_common_arguments, resolve_dtype, table


def main() -> None:
    args = parse_common_arguments(__doc__).parse_args()
    dtype = resolve_dtype(args)
    model, processor = build_model_and_processor(args, dtype)
    print(header(args, model, "Where segment() spends its time (batch 1)"))
    size = model.config.tile_size
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    inputs = processor.prepare_segmentation_inputs(image, "the red circle")
    input_ids = inputs["input_ids"].to(args.device)
    attention_mask = inputs["attention_mask"].to(args.device)
    pixel_values = inputs["pixel_values"].to(args.device, dtype)
    with torch.inference_mode():
        features = model.get_segmentation_image_features(pixel_values)
        parts = {
            "plain InternVLModel forward (floor)": lambda: model.model(
                input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values
            ),
            "InternVL vision tower + projector": lambda: model.model.get_image_features(pixel_values=pixel_values),
            "vision features incl. replicated projector": lambda: model.get_segmentation_image_features(pixel_values),
            "language model + segmentation head": lambda: model(
                input_ids=input_ids, attention_mask=attention_mask, image_features=features, logits_to_keep=1
            ),
            "segmentation attention mask": lambda: model._language_model_attention_mask(
                input_ids, attention_mask, None
            ),
            "processor": lambda: processor.prepare_segmentation_inputs(image, "the red circle"),
            "segment() end to end": lambda: model.segment(image, "the red circle", processor=processor),
        }
        results = interleaved(parts, args.repeats, args.device)
    print(table(["part", "time"], [[name, f"{result['seconds'] * 1000:.1f} ms"] for name, result in results.items()]))


if __name__ == "__main__":
    main()
