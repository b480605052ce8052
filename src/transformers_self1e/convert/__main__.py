"""Command line.

    python -m transformers_self1e.convert reference --checkpoint ... --reference-config ... --out ... [--overwrite]
    python -m transformers_self1e.convert internvl --checkpoint INTERNVL3_FOLDER --out ... [--overwrite]

--out must be a new or empty folder; with --overwrite the converted model's files in it are replaced and other files
are kept. Nothing is written when the checkpoint does not fit its config.
"""

import argparse
import sys

import torch

from ..modeling import Self1EForSegmentation
from .internvl import convert_internvl_checkpoint
from .record import compare_with_record, load_reference_record
from .reference import convert_reference_checkpoint

PARITY_TOLERANCE = 1e-4
DTYPES = {
    "auto": None,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
}


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
    reference.add_argument(
        "--lora-alpha",
        type=float,
        help="lora_alpha of LoRA factors left unmerged in the checkpoint (default: twice the rank, as the reference "
        "training)",
    )
    reference.add_argument(
        "--lora-adapter", help="a PEFT adapter folder (adapter_config.json + weights) to merge into the checkpoint"
    )
    reference.add_argument(
        "--lora-adapter-prefix",
        default="language_model.",
        help="prefix of the adapter's module names in the checkpoint (default: language_model., for an adapter "
        "saved from the reference's language model)",
    )
    _add_output_options(reference)

    internvl = commands.add_parser(
        "internvl",
        help="start a Self1E model from an InternVL3 base checkpoint (-hf or original layout): [SEG] added, "
        "segmentation head initialised",
    )
    internvl.add_argument("--checkpoint", required=True, help="folder with config.json and safetensors weights")
    internvl.add_argument("--out", required=True, help="folder to write the Self1E model to")
    internvl.add_argument("--image-token-id", type=int, help="id of <IMG_CONTEXT> if neither config nor tokenizer say")
    internvl.add_argument("--seg-token-id", type=int, help="id of [SEG] (default: the first id after the vocabulary)")
    internvl.add_argument("--dtype", choices=sorted(DTYPES), default="auto", help="weight dtype (auto: as stored)")
    internvl.add_argument("--seed", type=int, default=0, help="seed of the segmentation head's initialisation")
    _add_output_options(internvl)
    return parser


def _add_output_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out folder: the converted model's files are replaced, other files are kept",
    )
    command.add_argument(
        "--check-only",
        action="store_true",
        help="check names, shapes and dtypes against the config from the safetensors headers, write nothing",
    )


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
        if args.command == "reference":
            out = convert_reference_checkpoint(
                args.checkpoint,
                args.reference_config,
                args.out,
                image_token_id=args.image_token_id,
                seg_token_id=args.seg_token_id,
                dtype=DTYPES[args.dtype],
                lora_alpha=args.lora_alpha,
                lora_adapter=args.lora_adapter,
                lora_adapter_prefix=args.lora_adapter_prefix,
                check_only=args.check_only,
                overwrite=args.overwrite,
            )
        else:
            out = convert_internvl_checkpoint(
                args.checkpoint,
                args.out,
                dtype=DTYPES[args.dtype],
                image_token_id=args.image_token_id,
                seg_token_id=args.seg_token_id,
                seed=args.seed,
                check_only=args.check_only,
                overwrite=args.overwrite,
            )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.check_only:
        print(f"{args.checkpoint}: every name, shape and dtype fits the config")
        return 0
    print(f"wrote {out}")
    if getattr(args, "verify", None) and not verify(str(out), args.verify):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
