"""Generated junk thrown at the public entry points: `segment()`, the processor, the training collator and the `self1e`
command line either work or fail with a `ValueError`, `TypeError` or `FileNotFoundError` that says something; the
command line exits with 0, or with 2 and one `error:` line (argparse's usage errors too), and a failed command leaves
no file in its output folder, a successful one no temporary file.

The examples are derandomized (the same on every run, no example database), so CI is reproducible; set
`SELF1E_FUZZ_EXPLORE=1` to draw new random examples, more of them, while hunting for bugs.
"""

import contextlib
import io
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from helpers.pairs import random_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.cli import main
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL
from transformers_self1e.training import Self1EDataCollator

EXPLORE = os.environ.get("SELF1E_FUZZ_EXPLORE") == "1"
ALLOWED_ERRORS = (ValueError, TypeError, FileNotFoundError)


def fuzz_settings(max_examples: int) -> settings:
    """`max_examples` derandomized examples (ten times as many random ones when exploring), without deadlines: the
    first call of a code path may be slow on a loaded machine."""
    return settings(
        max_examples=max_examples * 10 if EXPLORE else max_examples,
        derandomize=not EXPLORE,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def assert_clear_error(error: BaseException) -> None:
    """`error` is one of the exceptions bad input may raise, with a message."""
    assert isinstance(error, ALLOWED_ERRORS), f"{type(error).__name__} escaped: {error!r}"
    assert str(error).strip(), f"{type(error).__name__} without a message"


# ----------------------------------------------------------------------------------------------------------
# Input files and the shipped model, made once per module
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    return Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval(), Self1EProcessor.from_pretrained(SHIPPED_MODEL)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Input files, good and bad, by name; `outputs` is the folder each command gets a new output folder in."""
    root = tmp_path_factory.mktemp("fuzz")
    random_image(40, 52, seed=3).save(root / "image.png")
    PIL.Image.fromarray((np.arange(40 * 52).reshape(40, 52) % 3 == 0).astype(np.uint8) * 255).save(root / "gt.png")
    buffer = io.BytesIO()
    random_image(40, 52, seed=4).save(buffer, format="PNG")
    (root / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (root / "text.png").write_text("not an image")
    (root / "folder").mkdir()
    (root / "broken-examples").mkdir()
    shutil.copy(root / "truncated.png", root / "broken-examples" / "a.png")
    shutil.copy(root / "gt.png", root / "broken-examples" / "a-gt.png")
    example = {"name": "a", "image": "a.png", "prompt": "the circle", "gt": "a-gt.png", "seed": 0, "index": 0}
    (root / "broken-examples" / "examples.json").write_text(json.dumps([example]))
    (root / "results.json").write_text(json.dumps([{"dataset": "x", "metric": "cIoU", "value": "high"}]))
    (root / "outputs").mkdir()
    paths = {path.name: path for path in root.iterdir()}
    return {**paths, "missing": root / "missing.png", "shipped-model": SHIPPED_MODEL, "examples": DEMO_EXAMPLES}


# ----------------------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------------------

SPECIAL_TEXTS = [
    "",
    " ",
    "\n\t ",
    "circle",
    "the red circle on the left",
    "[SEG]",
    "a [SEG] b [SEG]",
    "<image>",
    "<IMG_CONTEXT>",
    "<img></img>",
    "<|im_start|>assistant\n",
    "<|im_end|>",
    "<|endoftext|>",
    "{{ messages }}",
    "\ud800",
    "a\udfffb",
    "\x00",
    "é" * 300,
]
# Any characters, lone surrogates and control characters included.
texts = st.one_of(st.sampled_from(SPECIAL_TEXTS), st.text(st.characters(), max_size=40))
# Descriptions a segmenter takes: letters, digits, punctuation and symbols of any script.
valid_texts = st.one_of(
    st.sampled_from(["circle", "the red circle on the left", "a small square"]),
    st.text(st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=30),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=8),
)

# Image dtypes; the processor must refuse, not crash on, those it does not read.
ARRAY_DTYPES = ["uint8", "uint16", "int8", "int32", "int64", "float16", "float32", "float64", "bool", "complex64"]


@st.composite
def numpy_images(draw) -> np.ndarray:
    """Arrays of 0 to 4 dimensions (small ones, and some of the usual image layouts), any values of their dtype."""
    dtype = np.dtype(draw(st.sampled_from(ARRAY_DTYPES)))
    layout = st.sampled_from(
        [(20, 30, 3), (3, 20, 30), (20, 30), (1, 20, 30, 3), (2, 3, 20, 30), (3, 9, 3), (20, 30, 4)]
    )
    shape = draw(st.one_of(layout, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def torch_images(draw) -> torch.Tensor:
    array = draw(numpy_images().filter(lambda array: array.dtype.name not in ("uint16",)))
    return torch.from_numpy(array.copy())


@st.composite
def pil_images(draw) -> PIL.Image.Image:
    mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "P", "1", "I", "F", "I;16", "CMYK", "YCbCr", "HSV"]))
    size = draw(st.tuples(st.integers(0, 40), st.integers(0, 40)))
    return PIL.Image.new(mode, size)


def image_files(files: dict[str, Path]) -> st.SearchStrategy:
    """Paths (str or Path) of good and bad files, and images opened lazily from the image files, as PIL does."""
    names = ["image.png", "gt.png", "truncated.png", "text.png", "folder", "missing"]
    paths = st.sampled_from(names).flatmap(lambda name: st.sampled_from([files[name], str(files[name])]))
    opened = st.sampled_from(["image.png", "truncated.png"]).map(lambda name: PIL.Image.open(files[name]))
    return st.one_of(paths, opened)


def sometimes_junk(valid: st.SearchStrategy, junk: st.SearchStrategy) -> st.SearchStrategy:
    """A valid value two times in three, junk otherwise, so that most calls get far enough to do some work."""
    return st.one_of(valid, valid, junk)


# Images every entry point reads: RGB arrays and PIL images of any size up to 40x40.
valid_images = st.one_of(
    st.tuples(st.integers(1, 40), st.integers(1, 40)).flatmap(
        lambda size: hnp.arrays(np.uint8, (*size, 3), elements=st.integers(0, 255))
    ),
    st.tuples(st.integers(1, 40), st.integers(1, 40)).map(lambda size: PIL.Image.new("RGB", size, "red")),
)


def images(files: dict[str, Path]) -> st.SearchStrategy:
    single = st.one_of(numpy_images(), torch_images(), pil_images(), image_files(files), scalars)
    nested = st.lists(st.one_of(single, st.lists(st.integers(0, 255), max_size=4)), max_size=3)
    return sometimes_junk(valid_images, st.one_of(single, nested))


junk_prompts = st.one_of(
    texts,
    st.lists(texts, max_size=4),
    st.lists(st.one_of(texts, scalars, st.lists(texts, max_size=2)), max_size=3),
    st.lists(
        st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant", "system", "bot"])},
                optional={
                    "content": st.one_of(
                        texts, st.lists(st.dictionaries(st.sampled_from(["type", "text"]), texts), max_size=2)
                    )
                },
            ),
            max_size=3,
        ),
        max_size=2,
    ),
    scalars,
)
prompts = sometimes_junk(st.one_of(valid_texts, st.lists(valid_texts, min_size=1, max_size=3)), junk_prompts)
thresholds = st.one_of(st.floats(allow_nan=True, allow_infinity=True), scalars, st.just(np.float32(0.3)))
# Image processor options and made-up ones, with any values; tile counts stay small so that an accepted value is
# processed in milliseconds.
option_values = st.one_of(scalars, st.integers(-2, 12), st.floats(0, 1))
segment_kwargs = st.dictionaries(
    st.sampled_from(
        [
            "max_tiles",
            "min_tiles",
            "use_thumbnail",
            "max_image_pixels",
            "prompt_type",
            "return_probabilities",
            "classes",
            "input_data_format",
            "made_up_option",
            "do_resize",
            "size",
            "return_tensors",
        ]
    ),
    option_values,
    max_size=3,
).filter(lambda kwargs: not (isinstance(kwargs.get("max_tiles"), int) and kwargs["max_tiles"] > 12))


# ----------------------------------------------------------------------------------------------------------
# The library
# ----------------------------------------------------------------------------------------------------------


@fuzz_settings(max_examples=120)
@given(data=st.data())
def test_segment_raises_only_clear_errors(shipped, files, data):
    model, processor = shipped
    image = data.draw(images(files), label="images")
    prompt = data.draw(prompts, label="prompts")
    kwargs = data.draw(segment_kwargs, label="kwargs")
    if data.draw(st.booleans(), label="with threshold"):
        kwargs["threshold"] = data.draw(thresholds, label="threshold")
    try:
        result = model.segment(image, prompt, processor=processor, **kwargs)
    except Exception as error:  # noqa: BLE001 - the property is about which exceptions escape
        assert_clear_error(error)
        return
    for single in result if isinstance(result, list) else [result]:
        assert single.masks.dtype == torch.bool and single.masks.ndim == 3
        assert len(single.prompts) == single.masks.shape[0]


@fuzz_settings(max_examples=60)
@given(data=st.data())
def test_processor_raises_only_clear_errors(shipped, files, data):
    _, processor = shipped
    image = data.draw(images(files), label="images")
    kwargs = data.draw(segment_kwargs.map(lambda kwargs: {k: v for k, v in kwargs.items() if k != "classes"}))
    try:
        if data.draw(st.booleans(), label="prepare_segmentation_inputs"):
            processor.prepare_segmentation_inputs(image, data.draw(prompts, label="prompts"), **kwargs)
        else:
            processor(images=image, text=data.draw(prompts, label="text"), **kwargs)
    except Exception as error:  # noqa: BLE001
        assert_clear_error(error)


def collator_rows(files: dict[str, Path]) -> st.SearchStrategy:
    masks = st.one_of(
        hnp.arrays(
            st.sampled_from(["uint8", "bool", "float32", "int64"]).map(np.dtype),
            st.sampled_from([(40, 52), (52, 40), (1, 40, 52), (20, 30, 3), (0,)]),
        ),
        st.lists(st.lists(st.integers(0, 1), max_size=3), max_size=3),
        scalars,
        st.dictionaries(st.sampled_from(["size", "counts"]), scalars, max_size=2),
    )
    conversation = st.lists(
        st.dictionaries(
            st.sampled_from(["role", "content"]),
            st.one_of(
                st.sampled_from(["user", "assistant", "system", "bot"]),
                texts,
                st.lists(
                    st.dictionaries(
                        st.sampled_from(["type", "text"]), st.one_of(st.just("image"), st.just("text"), texts)
                    ),
                    max_size=2,
                ),
            ),
        ),
        max_size=3,
    )
    token_ids = st.lists(st.integers(-5, 200), max_size=20)
    fields = {
        "image": st.one_of(images(files), st.none()),
        "conversation": st.one_of(conversation, scalars),
        "expression": texts,
        "prompt": texts,
        "answer": st.one_of(texts, scalars),
        "prompt_type": st.one_of(st.sampled_from(["short", "instruction"]), scalars),
        "input_ids": st.one_of(token_ids, scalars),
        "labels": st.one_of(token_ids, scalars),
        "attention_mask": st.one_of(st.lists(st.integers(0, 1), max_size=20), scalars),
        "masks": st.one_of(st.lists(masks, max_size=2), masks),
        "mask": masks,
        "id": scalars,
    }
    # A segmentation row the collator takes, with up to two of its fields replaced or added; or any fields at all.
    valid_row = valid_texts.map(
        lambda expression: {
            "image": np.zeros((40, 52, 3), np.uint8),
            "expression": expression,
            "mask": np.eye(40, 52, dtype=bool),
        }
    )
    change = st.one_of(
        st.just({}), st.sampled_from(sorted(fields)).flatmap(lambda key: fields[key].map(lambda value: {key: value}))
    )
    changed_row = st.tuples(valid_row, change, change).map(lambda parts: {**parts[0], **parts[1], **parts[2]})
    return st.one_of(changed_row, changed_row, st.fixed_dictionaries({}, optional=fields))


@fuzz_settings(max_examples=120)
@given(data=st.data())
def test_collator_raises_only_clear_errors(shipped, files, data):
    _, processor = shipped
    rows = data.draw(st.lists(collator_rows(files), max_size=3), label="rows")
    max_length = data.draw(st.one_of(st.none(), st.integers(1, 300)), label="max_length")
    try:
        Self1EDataCollator(processor, max_length=max_length)(rows)
    except Exception as error:  # noqa: BLE001
        assert_clear_error(error)


# Junk that escaped as another exception at some point (found by the fuzzing above, or reported), kept as fixed cases
# that every run tries: (entry point, keyword arguments), file names standing for the files of the `files` fixture.
KNOWN_JUNK = {
    "truncated image file": ("segment", {"images": "truncated.png", "prompts": "circle"}),
    "truncated image opened lazily": ("segment", {"images": "opened:truncated.png", "prompts": "circle"}),
    "max_tiles=None": ("segment", {"images": "image.png", "prompts": "circle", "max_tiles": None}),
    "max_tiles=False": ("segment", {"images": "image.png", "prompts": "circle", "max_tiles": False}),
    "do_resize=0.5": ("prepare", {"images": "image.png", "prompts": "circle", "do_resize": 0.5}),
    "lone surrogate": ("segment", {"images": "image.png", "prompts": "a\udfffb"}),
    "threshold as text": ("segment", {"images": "image.png", "prompts": "circle", "threshold": "0.5"}),
    "threshold NaN": ("segment", {"images": "image.png", "prompts": "circle", "threshold": float("nan")}),
    "no text": ("processor", {"images": None, "text": []}),
    "input_ids beyond int64": ("collator", {"rows": [{"input_ids": [1e30]}]}),
    "empty attention_mask": ("collator", {"rows": [{"input_ids": [1], "attention_mask": []}]}),
    "run-length mask without size": (
        "collator",
        {"rows": [{"image": np.zeros((40, 52, 3), np.uint8), "expression": "circle", "mask": {"counts": "x"}}]},
    ),
}


@pytest.mark.parametrize("case", sorted(KNOWN_JUNK))
def test_known_junk_raises_only_clear_errors(shipped, files, case):
    model, processor = shipped
    entry_point, kwargs = KNOWN_JUNK[case]
    images = kwargs.get("images")
    if isinstance(images, str):
        name = images.removeprefix("opened:")
        kwargs = {**kwargs, "images": PIL.Image.open(files[name]) if images.startswith("opened:") else files[name]}
    calls = {
        "segment": lambda: model.segment(processor=processor, **kwargs),
        "prepare": lambda: processor.prepare_segmentation_inputs(**kwargs),
        "processor": lambda: processor(**kwargs),
        "collator": lambda: Self1EDataCollator(processor)(kwargs["rows"]),
    }
    try:
        calls[entry_point]()
    except Exception as error:  # noqa: BLE001
        assert_clear_error(error)


# ----------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------

# Names of output files and folders: letters first, so that no name leaves the output folder ("..", "/x").
output_names = st.tuples(
    st.text("abcxyz", min_size=1, max_size=4),
    st.sampled_from(["", ".png", ".PNG", ".json", ".jpg", "/", "/sub.png", ".png/x.png"]),
).map("".join)
# Junk for a numeric option; never a large number, which a tile count or an image size would turn into minutes.
junk_numbers = st.one_of(
    st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e-300", "1.5", "", " 3", "0x10", "1_0", "٣"]),
    st.text("ab.-e ", max_size=4),
)
junk_texts = texts.filter(lambda text: "\x00" not in text)  # argv cannot hold NUL


def with_options(choices: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Up to three of `choices` as `--name=value` arguments (a flag where the value is None)."""
    names = st.lists(st.sampled_from(sorted(choices)), unique=True, max_size=3)
    pairs = names.flatmap(lambda names: st.tuples(*[st.tuples(st.just(name), choices[name]) for name in names]))
    return pairs.map(lambda pairs: [name if value is None else f"{name}={value}" for name, value in pairs])


def cli_arguments(files: dict[str, Path], out: Path) -> st.SearchStrategy:
    """argv lists of every command, mostly valid with some junk, their outputs inside `out` (the working directory,
    where the default outputs land)."""

    def path_of(*names: str) -> st.SearchStrategy:
        return st.sampled_from(names).map(lambda name: str(files[name]))

    def output(strategy: st.SearchStrategy = output_names) -> st.SearchStrategy:
        return strategy.map(lambda name: str(out / name))

    bad_models = st.one_of(path_of("folder", "missing", "image.png"), st.just("./x"))
    common = {
        "--model": sometimes_junk(path_of("shipped-model"), bad_models),
        "--device": sometimes_junk(st.just("cpu"), st.sampled_from(["cuda", "cuda:1", "mps", "meta", "bogus", "CPU"])),
        "--dtype": sometimes_junk(st.just("float32"), st.sampled_from(["bfloat16", "float16", "int8"])),
    }
    thresholds_and_tiles = {
        "--threshold": sometimes_junk(st.sampled_from(["0.5", "0.3", "0.99"]), junk_numbers),
        "--max-tiles": sometimes_junk(st.sampled_from(["1", "2", "6"]), junk_numbers),
    }
    bad_images = path_of("truncated.png", "text.png", "folder", "missing")
    # A leading "-" would read as an option.
    prompts = st.lists(valid_texts.filter(lambda text: not text.startswith("-")), min_size=1, max_size=3)
    segment = st.tuples(
        st.just(["segment"]),
        sometimes_junk(path_of("image.png"), bad_images).map(lambda path: [path]),
        sometimes_junk(prompts, st.lists(junk_texts, max_size=2)),
        with_options(
            {
                **common,
                **thresholds_and_tiles,
                "--out": output(),
                "--overlay": output(sometimes_junk(st.just("overlay.png"), output_names)),
                "--masks-dir": output(sometimes_junk(st.just("masks"), output_names)),
                "--classes": junk_texts,
                "--gt": sometimes_junk(path_of("gt.png"), st.one_of(bad_images, path_of("image.png"))),
            }
        ),
    )
    evaluate = st.tuples(
        st.just(["evaluate"]),
        sometimes_junk(
            st.sampled_from(["synthetic[:1]", "synthetic[:2]"]),
            st.one_of(
                st.sampled_from(["synthetic[:0]", "synthetic[1:2]", "synthetic[:x]", "[:1]", "synthetic[:1"]),
                path_of("folder", "missing"),
                st.text("synthec[:]1", max_size=12).filter(lambda spec: spec != "synthetic"),
            ),
        ).map(lambda spec: [f"--dataset={spec}"]),
        with_options(
            {
                **common,
                **thresholds_and_tiles,
                "--out": output(),
                "--split": junk_texts,
                "--seed": sometimes_junk(st.sampled_from(["0", "7"]), junk_numbers),
                "--image-size": sometimes_junk(st.sampled_from(["64", "80"]), st.one_of(junk_numbers, st.just("63"))),
            }
        ),
    )
    demo = st.tuples(
        st.just(["demo"]),
        with_options(
            {
                **common,
                "--examples": sometimes_junk(path_of("examples"), path_of("broken-examples", "folder", "missing")),
                "--out": output(),
            }
        ),
    )
    export = st.tuples(
        st.just(["export"]),
        sometimes_junk(path_of("shipped-model"), st.one_of(bad_models, st.just("a/b/c"))).map(lambda model: [model]),
        st.just([f"--out={out / 'hub'}"]),
        with_options(
            {
                "--out": output(),
                "--processor": sometimes_junk(path_of("shipped-model"), bad_models),
                "--max-shard-size": sometimes_junk(st.just("300KB"), st.sampled_from(["big", "-1GB", "0", "1.5GB"])),
                "--results": path_of("results.json", "missing", "image.png", "folder"),
                "--overwrite": st.none(),
            }
        ),
    )
    push = st.tuples(
        st.just(["push", "--dry-run"]),
        path_of("shipped-model", "folder", "missing").map(lambda folder: [folder]),
        st.sampled_from(["org/name", "bad id", ""]).map(lambda repo: [f"--repo-id={repo}"]),
    )
    return st.one_of(segment, evaluate, demo, export, push).map(lambda parts: list(itertools.chain(*parts)))


@contextlib.contextmanager
def working_directory(folder: Path):
    """Runs in `folder`, where a command's default outputs (`mask.png`, `report.json`, ...) then land."""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def written_files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@fuzz_settings(max_examples=60)
@given(data=st.data())
def test_command_line_exits_with_one_error_line_and_leaves_no_partial_file(files, data):
    out = Path(tempfile.mkdtemp(dir=files["outputs"]))
    argv = data.draw(cli_arguments(files, out), label="argv")
    stderr = io.StringIO()
    with working_directory(out), contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_info:
            assert exit_info.code == 2, f"SystemExit({exit_info.code})"
            assert stderr.getvalue().splitlines()[-1].split(": error: ")[1], stderr.getvalue()
            assert written_files(out) == []
            return
    lines = stderr.getvalue().splitlines()
    if code == 0:
        assert not [name for name in written_files(out) if ".partial" in name or Path(name).name.startswith(".")]
        return
    assert written_files(out) == [], "a failed command left files behind"
    if argv[0] == "push" and code == 1:
        # The folder failed its checks (nothing uploaded): an `error:` line, then one line per problem.
        assert lines[0].startswith("error: ") and len(lines) > 1, lines
        return
    assert code == 2, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("error: ") and lines[0][len("error: ") :].strip(), lines
