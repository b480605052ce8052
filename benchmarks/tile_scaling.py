"""segment() on images tiled into 1, 4, 6 and 12 tiles (448-px tiles, 256 image tokens each with the mid model).

python benchmarks/tile_scaling.py [--device cuda] [--config tiny] [--tiles 1 4 6 12]
"""

import numpy as np
from common import (
    build_model_and_processor,
    header,
    interleaved,
    megabytes,
    parse_common_arguments,
    random_image,
    ratio,
    resolve_dtype,
    table,
)

# Image shapes (rows, cols) whose closest InternVL grid has exactly that many tiles.
GRIDS = {1: (1, 1), 2: (1, 2), 4: (2, 2), 6: (2, 3), 8: (2, 4), 12: (3, 4)}


def main() -> None:
    parser = parse_common_arguments(__doc__)
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 4, 6, 12])
    args = parser.parse_args()
    dtype = resolve_dtype(args)
    model, processor = build_model_and_processor(args, dtype, max_tiles=12)
    print(header(args, model, "Scaling with tiles"))
    size = model.config.tile_size
    candidates, shapes = {}, {}
    for tiles in args.tiles:
        rows, cols = GRIDS[tiles]
        image = random_image(rows * size, cols * size, np.random.default_rng(tiles))
        shapes[tiles] = (rows, cols)
        candidates[tiles] = lambda image=image, tiles=tiles: model.segment(
            image, "the red circle", processor=processor, min_tiles=tiles, max_tiles=tiles
        )
    results = interleaved(candidates, args.repeats, args.device)
    base = results[args.tiles[0]]["seconds"]
    rows = [
        [
            str(tiles),
            f"{shapes[tiles][0]}x{shapes[tiles][1]}",
            str(tiles * model.config.image_tokens_per_tile),
            f"{result['seconds'] * 1000:.0f} ms",
            ratio(result["seconds"], base),
            megabytes(result["peak_bytes"]),
        ]
        for tiles, result in results.items()
    ]
    print(table(["tiles", "grid", "image tokens", "time", "vs 1 tile", "peak memory"], rows))


if __name__ == "__main__":
    main()
