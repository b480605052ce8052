"""Command line: `python -m hub_upload export ...` and `python -m hub_upload push ...` (see `--help`), also installed
as `self1e export` and `self1e push`; `python -m hub_upload sync-code DIR` refreshes an exported folder's remote code.

Exit codes: 0 success, 1 the folder failed its checks (nothing uploaded), 2 bad input (missing files, a processor
that does not fit the model, a non-empty output folder, no token).
"""

import argparse
import sys

from .export import export_hub_folder, sync_remote_code
from .folder_check import FolderCheckError, FolderReport
from .push import push_hub_folder


def add_publish_commands(commands: argparse._SubParsersAction) -> None:
    """Adds the `export` and `push` commands to `commands`, the subparsers of `python -m hub_upload` or `self1e`."""
    export = commands.add_parser("export", help="write a self-contained Hub folder for a SELF1E model")
    export.add_argument("model", metavar="MODEL_OR_DIR", help="a Self1E model folder (or Hub id)")
    export.add_argument("--out", required=True, help="folder to write (must be empty unless --overwrite)")
    export.add_argument("--processor", help="folder with the processor or the tokenizer (default: MODEL_OR_DIR)")
    export.add_argument("--max-shard-size", default="5GB", help="largest weight file (default: 5GB)")
    export.add_argument(
        "--results",
        help='evaluation results for the card: JSON list of {"dataset", "split", "metric", "value"[, "dataset_id"]}',
    )
    export.add_argument("--base-model", help="Hub id of the base model (default: inferred for InternVL3 sizes)")
    export.add_argument("--license", default="apache-2.0", help="license identifier of the card (default: apache-2.0)")
    export.add_argument("--dataset", action="append", default=[], help="Hub id of a training dataset (repeatable)")
    export.add_argument("--repo-id", help="repository the folder is meant for, used in the card's code snippets")
    export.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty --out")

    push = commands.add_parser("push", help="check a Hub folder and upload it")
    push.add_argument("folder", metavar="DIR")
    push.add_argument("--repo-id", required=True, help="org/name of the model repository")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", help="branch to upload to (created if missing; default: main)")
    push.add_argument("--commit-message", help="message of the upload commit")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    push.add_argument("--dry-run", action="store_true", help="check the folder and list what would be uploaded")
    load = push.add_mutually_exclusive_group()
    load.add_argument("--full-load", action="store_true", default=None, help="load the weights in the check")
    load.add_argument(
        "--meta-load",
        action="store_false",
        dest="full_load",
        help="check the weights on the meta device only, without a forward pass; the weights are still scanned for "
        "NaN/inf (default for folders above 1 GiB of weights)",
    )


def add_sync_code_command(commands: argparse._SubParsersAction) -> None:
    """Adds the `sync-code` command to `commands`."""
    sync_code = commands.add_parser(
        "sync-code", help="replace the remote-code files of an exported folder with the current modeling/ files"
    )
    sync_code.add_argument("folder", metavar="DIR", help="an exported SELF1E folder, e.g. the shipped model")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hub_upload", description="Publish SELF1E models on the Hub.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_publish_commands(commands)
    add_sync_code_command(commands)
    return parser


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def print_files(report: FolderReport) -> None:
    width = max(len(name) for name, _ in report.files)
    for name, size in report.files:
        print(f"  {name:<{width}}  {human_size(size):>9}")
    print(f"  {len(report.files)} files, {human_size(report.total_bytes)}")


def run(args: argparse.Namespace) -> int:
    """Runs the command parsed into `args` and returns its exit code."""
    try:
        if args.command == "export":
            out = export_hub_folder(
                args.model,
                args.out,
                processor=args.processor,
                max_shard_size=args.max_shard_size,
                results=args.results,
                base_model=args.base_model,
                license=args.license,
                datasets=args.dataset,
                repo_id=args.repo_id,
                overwrite=args.overwrite,
            )
            print(f"wrote {out}")
            return 0
        if args.command == "sync-code":
            replaced = sync_remote_code(args.folder)
            print(f"{args.folder}: replaced {', '.join(replaced)}" if replaced else f"{args.folder}: code up to date")
            return 0
        result = push_hub_folder(
            args.folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            token=args.token,
            dry_run=args.dry_run,
            full_load=args.full_load,
        )
    except FolderCheckError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    loading = (
        "loaded fully, one forward pass finite"
        if result.report.full_load
        else "checked on the meta device: no forward pass, weights scanned for NaN/inf"
    )
    target = f"{result.repo_id}" + (f" (branch {result.revision})" if result.revision else "")
    if args.dry_run:
        print(f"dry run: {args.folder} passed every check (model {loading}); would upload to {target}:")
        print_files(result.report)
    else:
        print(f"uploaded {args.folder} to {target}: {result.commit_url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
