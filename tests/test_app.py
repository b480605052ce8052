"""`self1e app` driven through its API with gradio_client, the client users call it with: each tab returns the masks of
the public API on the same inputs, drawn as `self1e segment` draws them; bad input is a readable message and the app
keeps serving."""

import html
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import PIL.Image
import pytest
import torch

gradio_client = pytest.importorskip("gradio_client", reason="needs the 'app' extra")
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from helpers.app_server import free_port, serve_shipped_app

from transformers_self1e.app import NO_TARGET, Self1EApp, build_app, launch_app
from transformers_self1e.cli import build_parser
from transformers_self1e.demo import DEMO_EXAMPLES
from transformers_self1e.visualize import draw_label_map, draw_overlay

IMAGE = DEMO_EXAMPLES / "01-position-regular.png"
# Small enough that an oversized upload stays small on disk; the examples are 64x64.
MAX_IMAGE_PIXELS = 128 * 128
TIMING = re.compile(r"took \d+\.\d{3} s")


@pytest.fixture(scope="module")
def served():
    with serve_shipped_app(max_image_pixels=MAX_IMAGE_PIXELS) as served:
        yield served


@pytest.fixture(scope="module")
def client(served):
    return Client(served.url, verbose=False)


def read_masks(files: list) -> torch.Tensor:
    """Masks from PNG paths or opened images (255 inside)."""
    images = [file if isinstance(file, PIL.Image.Image) else PIL.Image.open(file) for file in files]
    return torch.stack([torch.from_numpy(np.asarray(image.convert("L")) > 127) for image in images])


def read_rgb(path: str) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"))


def rgb(image: PIL.Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_referring_returns_the_masks_of_segment_and_the_overlay_of_the_cli(served, client):
    prompts = ["the leftmost shape", "the green circle"]
    picture, table, files, status = client.predict(
        handle_file(str(IMAGE)), "\n".join(prompts), 0.5, api_name="/referring"
    )
    image = PIL.Image.open(IMAGE).convert("RGB")
    expected = served.model.segment(image, prompts, processor=served.processor)
    assert expected.no_target.tolist() == [False, True]  # one prompt that matches, one that does not
    assert torch.equal(read_masks(files), expected.masks)
    assert np.array_equal(read_rgb(picture), rgb(draw_overlay(image, expected.masks, prompts, expected.scores)))
    assert [row[:2] for row in table["data"]] == [[prompts[0], "found"], [prompts[1], NO_TARGET]]
    assert [row[3] for row in table["data"]] == expected.masks.flatten(1).sum(-1).tolist()
    assert TIMING.search(status) and f"'{prompts[1]}': {NO_TARGET}" in status


def test_classes_return_the_label_map_of_segment(served, client):
    classes = ["circle", "square", "rectangle", "triangle"]
    picture, table, files, status = client.predict(
        handle_file(str(IMAGE)), ", ".join(classes), 0.5, api_name="/classes"
    )
    image = PIL.Image.open(IMAGE).convert("RGB")
    expected = served.model.segment(image, classes=classes, processor=served.processor)
    assert torch.equal(read_masks(files), expected.masks)
    assert np.array_equal(read_rgb(picture), rgb(draw_label_map(expected.label_map, classes)))
    assert [row[0] for row in table["data"]] == classes
    assert [row[1] == NO_TARGET for row in table["data"]] == expected.no_target.tolist()
    assert TIMING.search(status)


def test_chat_answers_and_segments_each_seg_of_the_answer(served, client):
    question = "Can you segment the leftmost shape in this image?"
    answer, _, table, files, status = client.predict(handle_file(str(IMAGE)), question, 16, 0.5, api_name="/chat")
    image = PIL.Image.open(IMAGE).convert("RGB")
    assert answer == served.model.chat(image, question, processor=served.processor, max_new_tokens=16)
    expected = served.model.segment_answer(image, question, answer, processor=served.processor)
    assert len(expected.masks) == answer.count("[SEG]") >= 1
    assert torch.equal(read_masks(files), expected.masks)
    assert [row[0] for row in table["data"]] == [f"[SEG] {index + 1}" for index in range(len(expected.masks))]
    assert "chat() took" in status and "segment_answer()" in status


def test_bad_inputs_are_messages_and_the_app_keeps_serving(client, tmp_path):
    image = handle_file(str(IMAGE))
    oversized = tmp_path / "oversized.png"
    PIL.Image.new("RGB", (200, 100)).save(oversized)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(IMAGE.read_bytes()[:200])  # the header says 64x64; the pixels are cut off
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not an image")
    requests = [
        ((None, "the circle", 0.5), "/referring", "Upload an image first"),
        ((image, " \n \n", 0.5), "/referring", "Type at least one prompt"),
        ((image, "the circle\nthe [SEG] here", 0.5), "/referring", "Prompt 2 contains '[SEG]', which is reserved"),
        ((image, "a <IMG_CONTEXT> b", 0.5), "/referring", "Prompt 1 contains '<IMG_CONTEXT>', which is reserved"),
        ((handle_file(str(oversized)), "the circle", 0.5), "/referring", "200x100 = 20,000 pixels, more than"),
        ((handle_file(str(truncated)), "the circle", 0.5), "/referring", "not an image file this app can read"),
        # Gradio itself opens an upload before the app sees it; its message names PIL's error.
        ((handle_file(str(not_an_image)), "the circle", 0.5), "/referring", "cannot identify image file"),
        ((image, " , ,", 0.5), "/classes", "Type at least one class name"),
        ((image, "circle, [SEG]", 0.5), "/classes", "contains '[SEG]', which is reserved"),
        ((None, "Where is the circle?", 16, 0.5), "/chat", "Upload an image first"),
        ((image, "  ", 16, 0.5), "/chat", "Type a question"),
        ((image, "Where is the [SEG]?", 16, 0.5), "/chat", "The question contains '[SEG]'"),
    ]
    for arguments, api_name, message in requests:
        with pytest.raises(AppError) as raised:
            client.predict(*arguments, api_name=api_name)
        # The message is HTML (the page renders it so): user text in it is escaped.
        shown = html.unescape(str(raised.value))
        assert message in shown and "Traceback" not in shown, (api_name, arguments[1:], shown)
    _, table, files, _ = client.predict(image, "the leftmost shape", 0.5, api_name="/referring")
    assert table["data"][0][:2] == ["the leftmost shape", "found"] and len(files) == 1


def test_the_http_api_of_the_readme(served):
    """The README's curl calls: upload the image, start a call, read its result from the event stream."""
    httpx = pytest.importorskip("httpx")
    with open(IMAGE, "rb") as file:
        (uploaded,) = httpx.post(f"{served.url}gradio_api/upload", files={"files": file}).json()
    image = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    call = httpx.post(f"{served.url}gradio_api/call/referring", json={"data": [image, "the leftmost shape", 0.5]})
    events = httpx.get(f"{served.url}gradio_api/call/referring/{call.json()['event_id']}", timeout=60).text
    assert events.startswith("event: complete\ndata: "), events
    _, table, files, _ = json.loads(events.splitlines()[1].removeprefix("data: "))
    mask = PIL.Image.open(io.BytesIO(httpx.get(files[0]["url"]).content))
    image = PIL.Image.open(IMAGE).convert("RGB")
    expected = served.model.segment(image, "the leftmost shape", processor=served.processor)
    assert torch.equal(read_masks([mask]), expected.masks) and table["data"][0][1] == "found"


def test_messages_with_user_text_stay_text_in_the_page(client):
    """The page renders an error as HTML; a class name from the user must not become markup."""
    with pytest.raises(AppError) as raised:
        client.predict(handle_file(str(IMAGE)), "<b>x</b>, <b>x</b>", 0.5, api_name="/classes")
    assert "&lt;b&gt;x&lt;/b&gt;" in str(raised.value) and "<b>" not in str(raised.value)


def test_an_answer_without_seg_shows_the_image_and_no_masks(served, monkeypatch):
    handlers = Self1EApp(served.model, served.processor)
    monkeypatch.setattr(served.model, "chat", lambda *args, **kwargs: "A circle and a square.")
    answer, result = handlers.chat(str(IMAGE), "What is in the picture?")
    image = PIL.Image.open(IMAGE).convert("RGB")
    assert answer == "A circle and a square." and result.rows == [] and result.files == []
    assert np.array_equal(rgb(result.picture), rgb(draw_overlay(image, torch.zeros((0, 64, 64), dtype=bool), [])))
    assert "no [SEG]" in result.status


def test_a_taken_port_is_a_clear_error(served):
    app = build_app(served.model, served.processor)
    port = int(served.url.rstrip("/").rsplit(":", 1)[1])
    with pytest.raises(ValueError, match=f"cannot serve on 127.0.0.1:{port}: the port is in use"):
        launch_app(app, "127.0.0.1", port, block=False)


def test_app_command_defaults_and_bad_port(capsys):
    args = build_parser().parse_args(["app"])
    assert (args.host, args.port, args.device, args.dtype) == ("127.0.0.1", 7860, "cpu", "float32")
    assert args.model.endswith("self1e-tiny-synthetic")
    with pytest.raises(SystemExit) as raised:
        build_parser().parse_args(["app", "--port", "70000"])
    assert raised.value.code == 2 and "between 1 and 65535" in capsys.readouterr().err


@pytest.mark.slow
def test_self1e_app_serves_the_page_offline(tmp_path):
    """The command itself, as a user starts it: it serves, answers a client, and Ctrl+C stops it cleanly."""
    port = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    command = [sys.executable, "-m", "transformers_self1e.cli", "app", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    watchdog = threading.Timer(300, server.kill)
    watchdog.start()
    try:
        printed = []
        for line in server.stdout:
            printed.append(line)
            if line.startswith("SELF1E app on"):
                break
        assert printed and printed[-1].startswith(f"SELF1E app on http://127.0.0.1:{port}/"), "".join(printed)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, table, _, _ = client.predict(handle_file(str(IMAGE)), "the leftmost shape", 0.5, api_name="/referring")
        assert table["data"][0][:2] == ["the leftmost shape", "found"]
        server.send_signal(signal.SIGINT)  # Ctrl+C
        rest, _ = server.communicate(timeout=60)
        assert server.returncode == 0 and "Traceback" not in rest, rest
    finally:
        watchdog.cancel()
        server.kill()
        server.wait()
