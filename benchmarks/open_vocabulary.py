"""Open-vocabulary segmentation of one image with K class prompts: one batched `segment(classes=...)` (the vision
tower and the image-only half of the mask head run once, prompts go through the language model together) against K
separate `segment()` calls.

    python benchmarks/open_vocabulary.py [--device cuda] [--config tiny] [--classes 1 8 32 150] [--separate-up-to 32]

Separate calls for K above `--separate-up-to` are estimated as K times the measured single call (marked "est.").
"""

import numpy as np
import PIL.Image
from common import (
    build_model_and_processor,
    header,
    interleaved,
    megabytes,
    parse_common_arguments,
    resolve_dtype,
    table,
)
from processor import CLASS_NAMES


def main() -> None:
    parser = parse_common_arguments(__doc__)
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 8, 32, 150])
    parser.add_argument("--separate-up-to", type=int, default=32)
    args = parser.parse_args()
    dtype = resolve_dtype(args)
    model, processor = build_model_and_processor(args, dtype)
    print(header(args, model, "Open vocabulary: K classes on one image"))
    size = model.config.tile_size
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))

    single = interleaved(
        {"single": lambda: model.segment(image, CLASS_NAMES[0], processor=processor)}, args.repeats, args.device
    )["single"]
    rows = [["1 call", "-", f"{single['seconds'] * 1000:.0f} ms", "1.00", megabytes(single["peak_bytes"]), "-"]]
    for count in args.classes:
        classes = CLASS_NAMES[:count]
        candidates = {"batched": lambda: model.segment(image, classes=classes, processor=processor)}
        if count <= args.separate_up_to:
            candidates["separate"] = lambda: [model.segment(image, name, processor=processor) for name in classes]
        results = interleaved(candidates, max(1, args.repeats if count <= 32 else 1), args.device)
        separate = results.get("separate", {"seconds": count * single["seconds"], "peak_bytes": single["peak_bytes"]})
        estimated = "" if "separate" in results else " (est.)"
        for name, result in (("batched", results["batched"]), ("separate" + estimated, separate)):
            per_class = result["seconds"] / count
            rows.append(
                [
                    f"K={count}",
                    name,
                    f"{result['seconds'] * 1000:.0f} ms",
                    f"{per_class / single['seconds']:.2f}",
                    megabytes(result["peak_bytes"]),
                    f"{per_class * 1000:.1f} ms",
                ]
            )
    print(table(["classes", "how", "total time", "per class / single call", "peak memory", "per class"], rows))


if __name__ == "__main__":
    main()
