"""Command line: `python -m transformers_self1e.convert reference --checkpoint ... --reference-config ... --out ...`."""

import argparse
import sys

import torch

from ..modeling import Self1EForSegmentation
from .record import compare_with_record, load_reference_record
from .reference import convert_reference_checkpoint

PARITY_TOLERANCE = 1e-4
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m transformers_self1e.convert", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    reference = commands.add_parser("reference", help="convert a checkpoint in the SELF1E authors' layout")
    reference.add_argument("--checkpoint", required=True, help="a .safetensors file, an index.json, or a folder")
    reference.add_argument(
        "--reference-config", required=True, help="the reference config.json, or a record's meta.json"
    )
    reference.add_argument("--out", required=True, help="folder to write the Self1E model to")
    reference.add_argument("--image-token-id", type=int, help="id of <IMG_CONTEXT> if the config does not give it")
    reference.add_argument("--seg-token-id", type=int, help="id of [SEG] if the config does not give it")
    reference.add_argument("--dtype", choices=sorted(DTYPES), default="auto", help="weight dtype (auto: as stored)")
    reference.add_argument(
        "--verify",
        metavar="RECORD_DIR",
        help=f"run the converted model on a reference record; fail if any relative error exceeds {PARITY_TOLERANCE}",
    )
    return parser


def verify(model_dir: str, record_dir: str) -> bool:
    """Prints the relative error of every expected tensor of the record; True when all are within tolerance."""
    record = load_reference_record(record_dir)
    # Parity is defined in float32 with the exact softmax, whatever dtype the folder stores.
    model = Self1EForSegmentation.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    errors = compare_with_record(model, record)
    width = max(map(len, errors))
    print(f"{'tensor':<{width}}  max relative error")
    for name, error in errors.items():
        flag = "" if error <= PARITY_TOLERANCE else "  FAIL"
        print(f"{name:<{width}}  {error:.3e}{flag}")
    worst = max(errors.values())
    passed = worst <= PARITY_TOLERANCE
    print(f"{'worst':<{width}}  {worst:.3e}  ({'within' if passed else 'above'} {PARITY_TOLERANCE:g})")
    return passed


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = convert_reference_checkpoint(
            args.checkpoint,
            args.reference_config,
            args.out,
            image_token_id=args.image_token_id,
            seg_token_id=args.seg_token_id,
            dtype=DTYPES[args.dtype],
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    if args.verify and not verify(str(out), args.verify):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
