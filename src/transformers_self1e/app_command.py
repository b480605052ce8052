"""`self1e app`: its arguments and what it runs. Gradio (the 'app' extra) is imported only when the command runs, so
the rest of the command line works without it."""

import argparse
import os

from .cli_arguments import add_model_placement_arguments, model_dtype, positive_int
from .demo import SHIPPED_MODEL
from .model_folder import load_model_and_processor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
# Larger uploads are refused before they are decoded: a page others can reach should not decode 50-megapixel images.
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port number lies between 1 and 65535, got {value}")
    return value


def add_app_command(commands: argparse._SubParsersAction) -> None:
    app = commands.add_parser(
        "app", help="a web page to segment images in the browser (Referring, Classes, Chat); needs the 'app' extra"
    )
    app.add_argument("--model", default=str(SHIPPED_MODEL), help="model folder (default: the shipped model)")
    app.add_argument(
        "--host", default=DEFAULT_HOST, help=f"address to serve on (default {DEFAULT_HOST}: this machine only)"
    )
    app.add_argument("--port", type=port_number, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    app.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help=f"refuse larger uploads (default {DEFAULT_MAX_IMAGE_PIXELS}, 4096x4096)",
    )
    add_model_placement_arguments(app)


def run_app(args: argparse.Namespace) -> int:
    """Loads the model and serves the page until interrupted."""
    # Gradio's usage analytics and version check would reach the network.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    from .app import build_app, launch_app

    model, processor = load_model_and_processor(args.model, args.device, model_dtype(args), args.quantize)
    app = build_app(model, processor, max_image_pixels=args.max_image_pixels)
    launch_app(app, host=args.host, port=args.port)
    return 0


__all__ = ["add_app_command", "run_app"]
