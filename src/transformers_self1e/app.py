"""`self1e app`: a Gradio page to try a SELF1E model in the browser, and its API for free.

Three tabs, each a thin layer over the model's public API, drawn by the pictures of `self1e segment`:

- Referring: `model.segment(image, prompts)` (one prompt per line), drawn by `visualize.draw_overlay`;
- Classes: `model.segment(image, classes=...)`, drawn by `visualize.draw_label_map`;
- Chat: `model.chat(image, question)`, then `model.segment_answer(...)`: one mask per `[SEG]` of the answer.

Every result comes with a table (one row per mask: its prompt, class or `[SEG]`, found or "no target", score and
pixels), every mask as a PNG to download (255 inside) and the time the model took. Bad input is a message in the page
(`gr.Error`), and the page stays up for the next request. Nothing reaches the network: no analytics, no version check,
no share link, and the page uses the fonts Gradio ships.

    app = build_app(model, processor)
    launch_app(app, host="127.0.0.1", port=7860)
"""

import functools
import html
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import PIL.Image
import torch

from .app_command import DEFAULT_HOST, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_PORT
from .demo import DEMO_EXAMPLES, load_demo_examples, save_mask
from .modeling import Self1EForSegmentation, Self1EProcessor
from .modeling.predictor import SegmentationResult
from .modeling.prompts_self1e import RESERVED_STRINGS, SEG_TOKEN
from .output_files import safe_file_name
from .visualize import draw_label_map, draw_overlay

MAX_UPLOAD_SIZE = "50mb"
DEFAULT_MAX_NEW_TOKENS = 64
# Mask downloads are written per response and removed an hour later; Gradio keeps its own copy for as long.
KEEP_DOWNLOADS_S = 3600
EXAMPLE_CLASSES = "circle, square, rectangle, triangle"
TABLE_HEADERS = ["mask", "result", "score", "pixels"]
NO_TARGET = "no target"
# Every tab's requests wait in one queue: the model runs one call at a time, whichever tab it comes from.
ONE_MODEL_CALL_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "model"}
UNREADABLE_IMAGE = "The upload is not an image file this app can read (try PNG or JPEG)."


@dataclass
class AppResult:
    """What a tab shows: the picture, one table row per mask, the mask PNGs, and a status line with the time."""

    picture: PIL.Image.Image
    rows: list[list]
    files: list[str]
    status: str

    def outputs(self) -> tuple:
        return self.picture, self.rows, self.files, self.status


class Self1EApp:
    """The handlers of the page, one per tab; each raises ValueError with a message for the page on bad input.

    Args:
        model: the model, in eval mode on its device.
        processor: its processor.
        max_image_pixels: images with more pixels are refused.
    """

    def __init__(
        self,
        model: Self1EForSegmentation,
        processor: Self1EProcessor,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ):
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be positive, got {max_image_pixels}")
        self.model = model
        self.processor = processor
        self.max_image_pixels = max_image_pixels
        self._downloads = tempfile.TemporaryDirectory(prefix="self1e-app-")

    def referring(self, image_path: str | None, prompts: str | None, threshold: float = 0.5) -> AppResult:
        """One mask per line of `prompts`, over the image."""
        image = self.open_image(image_path)
        lines = [line.strip() for line in (prompts or "").splitlines() if line.strip()]
        if not lines:
            raise ValueError("Type at least one prompt (one per line), e.g. 'the red circle'.")
        for number, line in enumerate(lines, start=1):
            check_text(line, f"Prompt {number}")
        start = time.perf_counter()
        result = self.model.segment(image, lines, processor=self.processor, threshold=threshold)
        seconds = time.perf_counter() - start
        picture = draw_overlay(image, result.masks, result.prompts, result.scores)
        return self._result(picture, result, result.prompts, f"segment() took {seconds:.3f} s")

    def classes(self, image_path: str | None, class_names: str | None, threshold: float = 0.5) -> AppResult:
        """A label map of the comma-separated `class_names`."""
        image = self.open_image(image_path)
        names = [name.strip() for name in (class_names or "").split(",") if name.strip()]
        if not names:
            raise ValueError("Type at least one class name, separated by commas, e.g. 'circle, square'.")
        for name in names:
            check_text(name, f"Class {name!r}")
        start = time.perf_counter()
        result = self.model.segment(image, classes=names, processor=self.processor, threshold=threshold)
        seconds = time.perf_counter() - start
        picture = draw_label_map(result.label_map, result.prompts)
        return self._result(picture, result, result.prompts, f"segment(classes=...) took {seconds:.3f} s")

    def chat(
        self,
        image_path: str | None,
        question: str | None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        threshold: float = 0.5,
    ) -> tuple[str, AppResult]:
        """The model's answer to `question`, and one mask per `[SEG]` in it."""
        image = self.open_image(image_path)
        question = (question or "").strip()
        if not question:
            raise ValueError("Type a question, e.g. 'Can you segment the circle in this image?'")
        check_text(question, "The question")
        max_new_tokens = int(max_new_tokens)
        if max_new_tokens < 1:
            raise ValueError(f"max new tokens must be at least 1, got {max_new_tokens}")
        start = time.perf_counter()
        answer = self.model.chat(image, question, processor=self.processor, max_new_tokens=max_new_tokens)
        chat_seconds = time.perf_counter() - start
        timing = f"chat() took {chat_seconds:.3f} s"
        if SEG_TOKEN not in answer:
            masks = torch.zeros((0, image.height, image.width), dtype=torch.bool)
            status = f"{timing}; the answer has no {SEG_TOKEN}, so there is nothing to segment"
            return answer, AppResult(draw_overlay(image, masks, []), [], [], status)
        start = time.perf_counter()
        result = self.model.segment_answer(image, question, answer, processor=self.processor, threshold=threshold)
        timing += f", segment_answer() {time.perf_counter() - start:.3f} s"
        labels = [f"{SEG_TOKEN} {index}" for index in range(1, len(result.masks) + 1)]
        picture = draw_overlay(image, result.masks, labels, result.scores)
        return answer, self._result(picture, result, labels, timing)

    def open_image(self, path: str | None) -> PIL.Image.Image:
        """The uploaded image in RGB; its size is checked before it is decoded."""
        if not path:
            raise ValueError("Upload an image first (or click one of the examples).")
        try:
            image = PIL.Image.open(path)
        except PIL.Image.DecompressionBombError:
            limit = f"{self.max_image_pixels:,}"
            raise ValueError(f"The image is too large: this app takes images of at most {limit} pixels.") from None
        except OSError:  # PIL.UnidentifiedImageError included
            raise ValueError(UNREADABLE_IMAGE) from None
        pixels = image.width * image.height
        if pixels > self.max_image_pixels:
            raise ValueError(
                f"The image is {image.width}x{image.height} = {pixels:,} pixels, more than this app's limit of "
                f"{self.max_image_pixels:,}: downscale it first."
            )
        try:
            return image.convert("RGB")
        except OSError:  # a truncated file fails only when it is decoded
            raise ValueError(UNREADABLE_IMAGE) from None

    def _result(self, picture: PIL.Image.Image, result: SegmentationResult, labels: Sequence[str], timing: str):
        folder = self._new_downloads_folder()
        rows, files = [], []
        masks = zip(labels, result.masks, result.scores, result.no_target)
        for index, (label, mask, score, empty) in enumerate(masks):
            rows.append([label, NO_TARGET if empty else "found", round(float(score), 3), int(mask.sum())])
            path = folder / (f"{index}-{safe_file_name(label)}".rstrip("-") + ".png")
            save_mask(mask, path)
            files.append(str(path))
        missing = [label for label, empty in zip(labels, result.no_target) if empty]
        found = f"{len(labels) - len(missing)} of {len(labels)} found"
        status = f"{timing}; {found}" + "".join(f"; {label!r}: {NO_TARGET}" for label in missing)
        return AppResult(picture, rows, files, status)

    def _new_downloads_folder(self) -> Path:
        root = Path(self._downloads.name)
        expired = time.time() - KEEP_DOWNLOADS_S
        for folder in root.iterdir():
            if folder.stat().st_mtime < expired:
                shutil.rmtree(folder, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=root))


def check_text(text: str, name: str) -> None:
    """Raises ValueError when `text` holds a string only the processor may insert (`[SEG]`, `<IMG_CONTEXT>`, ...)."""
    for reserved in RESERVED_STRINGS:
        if reserved in text:
            raise ValueError(f"{name} contains {reserved!r}, which is reserved for the model: describe it in words.")


def page_errors(handler: Callable) -> Callable:
    """`handler` with its ValueError, TypeError and FileNotFoundError shown in the page as a message."""

    @functools.wraps(handler)
    def run(*args):
        try:
            return handler(*args)
        except (ValueError, TypeError, FileNotFoundError) as error:
            # The page renders an error's message as HTML: user text in it must stay text. An expected error needs no
            # traceback in the server's log either.
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None

    return run


def build_app(
    model: Self1EForSegmentation,
    processor: Self1EProcessor,
    *,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    examples_folder: str | Path = DEMO_EXAMPLES,
) -> gr.Blocks:
    """The page: Referring, Classes and Chat tabs over `model`, with the images of `examples_folder` as examples.

    Its API endpoints are `/referring` (image, prompts, threshold), `/classes` (image, class names, threshold) and
    `/chat` (image, question, max new tokens, threshold); each returns the picture, the table, the mask PNGs and the
    status line, `/chat` the answer first.
    """
    handlers = Self1EApp(model, processor, max_image_pixels=max_image_pixels)
    folder = Path(examples_folder)
    examples = [(str(folder / example.image), example.prompt) for example in load_demo_examples(folder)]
    model_name = Path(model.name_or_path).name or "SELF1E"
    with gr.Blocks(title="SELF1E", analytics_enabled=False, delete_cache=(KEEP_DOWNLOADS_S, KEEP_DOWNLOADS_S)) as app:
        gr.Markdown(
            "# SELF1E: segment what a sentence describes\n"
            f"Model `{model_name}`. Upload an image (at most {max_image_pixels:,} pixels) or click an example, "
            "then press the button. Each mask can be downloaded as a PNG."
        )
        with gr.Tab("Referring"):
            _referring_tab(handlers, examples)
        with gr.Tab("Classes"):
            _classes_tab(handlers, examples)
        with gr.Tab("Chat"):
            _chat_tab(handlers, examples)
    return app


def _referring_tab(handlers: Self1EApp, examples: list[tuple[str, str]]) -> None:
    def referring(image_path, prompts, threshold):
        return handlers.referring(image_path, prompts, threshold).outputs()

    with gr.Row():
        with gr.Column():
            image = _image_input("referring")
            prompts = gr.Textbox(
                label="Prompts, one per line", lines=3, placeholder="the red circle", elem_id="referring-prompts"
            )
            threshold = _threshold_slider()
            button = gr.Button("Segment", variant="primary", elem_id="referring-submit")
            gr.Examples([list(example) for example in examples], [image, prompts], elem_id="referring-examples")
        outputs = _result_outputs("referring", "Masks")
    inputs = [image, prompts, threshold]
    button.click(page_errors(referring), inputs, outputs, api_name="referring", **ONE_MODEL_CALL_AT_A_TIME)


def _classes_tab(handlers: Self1EApp, examples: list[tuple[str, str]]) -> None:
    def classes(image_path, class_names, threshold):
        return handlers.classes(image_path, class_names, threshold).outputs()

    with gr.Row():
        with gr.Column():
            image = _image_input("classes")
            class_names = gr.Textbox(
                label="Class names, separated by commas", placeholder=EXAMPLE_CLASSES, elem_id="classes-names"
            )
            threshold = _threshold_slider()
            button = gr.Button("Segment classes", variant="primary", elem_id="classes-submit")
            rows = [[path, EXAMPLE_CLASSES] for path, _ in examples]
            gr.Examples(rows, [image, class_names], elem_id="classes-examples")
        outputs = _result_outputs("classes", "Label map")
    inputs = [image, class_names, threshold]
    button.click(page_errors(classes), inputs, outputs, api_name="classes", **ONE_MODEL_CALL_AT_A_TIME)


def _chat_tab(handlers: Self1EApp, examples: list[tuple[str, str]]) -> None:
    def chat(image_path, question, max_new_tokens, threshold):
        answer, result = handlers.chat(image_path, question, max_new_tokens, threshold)
        return answer, *result.outputs()

    with gr.Row():
        with gr.Column():
            image = _image_input("chat")
            question = gr.Textbox(
                label="Question", placeholder="Can you segment the circle in this image?", elem_id="chat-question"
            )
            max_new_tokens = gr.Slider(1, 256, value=DEFAULT_MAX_NEW_TOKENS, step=1, label="Max new tokens")
            threshold = _threshold_slider()
            button = gr.Button("Ask", variant="primary", elem_id="chat-submit")
            rows = [[path, f"Can you segment {prompt} in this image?"] for path, prompt in examples]
            gr.Examples(rows, [image, question], elem_id="chat-examples")
        outputs = _result_outputs("chat", "Masks", with_answer=True)
    inputs = [image, question, max_new_tokens, threshold]
    button.click(page_errors(chat), inputs, outputs, api_name="chat", **ONE_MODEL_CALL_AT_A_TIME)


def launch_app(app: gr.Blocks, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *, block: bool = True) -> str:
    """Serves `app` on `host`:`port` (never through a share link) and returns its address; with `block`, until the
    process is interrupted."""
    try:
        app.launch(
            server_name=host,
            server_port=port,
            share=False,
            prevent_thread_lock=True,
            quiet=True,
            max_file_size=MAX_UPLOAD_SIZE,
            # Errors the handlers do not expect (a file Gradio cannot open, a device out of memory) show their message
            # in the page instead of a bare "Error"; never a traceback.
            show_error=True,
        )
    except OSError:  # Gradio's "Cannot find empty port", whatever kept it from binding
        raise ValueError(
            f"cannot serve on {host}:{port}: the port is in use or the address is not this machine's; choose another "
            "port (--port) or host (--host)"
        ) from None
    url = f"http://{host}:{port}/"
    if block:
        print(f"SELF1E app on {url} (Ctrl+C stops it)", flush=True)
        app.block_thread()
    return url


def _image_input(tab: str) -> gr.Image:
    # A file path, so that the image's size is checked before it is decoded.
    return gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], elem_id=f"{tab}-image")


def _threshold_slider() -> gr.Slider:
    return gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask threshold (probability)")


def _result_outputs(tab: str, picture_label: str, with_answer: bool = False) -> list[gr.components.Component]:
    """The output column of a tab, top to bottom: (the answer,) the picture, the status line, the table and the mask
    PNGs; returned in the order the handlers return them: (answer,) picture, table, PNGs, status."""
    with gr.Column():
        answer = [gr.Textbox(label="Answer", interactive=False, elem_id=f"{tab}-answer")] if with_answer else []
        picture = gr.Image(type="pil", format="png", label=picture_label, interactive=False, elem_id=f"{tab}-picture")
        status = gr.Textbox(label="Status", interactive=False, elem_id=f"{tab}-status")
        table = gr.Dataframe(
            headers=TABLE_HEADERS,
            datatype=["str", "str", "number", "number"],
            label="Masks found",
            interactive=False,
            elem_id=f"{tab}-table",
        )
        files = gr.File(
            label="Mask PNGs (255 inside)", file_count="multiple", interactive=False, elem_id=f"{tab}-files"
        )
        return [*answer, picture, table, files, status]


__all__ = ["AppResult", "Self1EApp", "build_app", "launch_app"]
