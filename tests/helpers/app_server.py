"""The page of `self1e app` over the shipped model, served on 127.0.0.1 at a free port while a test module runs."""

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from transformers_self1e.app import build_app, launch_app
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.model_folder import load_model_and_processor
from transformers_self1e.modeling import Self1EForSegmentation, Self1EProcessor


@dataclass(frozen=True)
class ServedApp:
    url: str
    model: Self1EForSegmentation
    processor: Self1EProcessor


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_shipped_app(**build_kwargs) -> Iterator[ServedApp]:
    """`build_app(shipped model, **build_kwargs)` served in this process until the block ends."""
    model, processor = load_model_and_processor(SHIPPED_MODEL)
    app = build_app(model, processor, **build_kwargs)
    url = launch_app(app, "127.0.0.1", free_port(), block=False)
    try:
        yield ServedApp(url, model, processor)
    finally:
        app.close()
