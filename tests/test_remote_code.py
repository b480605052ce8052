"""A SELF1E folder loaded with `trust_remote_code=True` never asks the question again: `segment()`, `chat()`,
`segment_answer()` and the `image-segmentation` pipeline run without the package, with nobody answering stdin, and
give the in-package model's outputs, from a copied folder and from the Hugging Face cache as the model card loads
it."""

import shutil

import PIL.Image
import pytest
import torch
from helpers.remote_code import MODEL_TYPE_WARNING, TRUST_QUESTION, run_without_package

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples

QUESTION = "What is in this image?"
ANSWER = "It is [SEG]."
# Well under the sum of the questions' waits (transformers waits 15 s for an answer to each).
TIMEOUT = 60

# Each call gets a model of its own: every entry point must load the processor without asking, whatever ran before.
REMOTE_CALLS = """
    import numpy as np
    import PIL.Image
    import torch
    from transformers import AutoModel, pipeline

    model_id, image, prompt = {model_id!r}, PIL.Image.open({image!r}), {prompt!r}


    def fresh_model():
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        return model


    segmenter = pipeline("image-segmentation", model=model_id, trust_remote_code=True)
    outputs = {{
        "segment": fresh_model().segment(image, [prompt]).masks,
        "chat": fresh_model().chat(image, {question!r}, max_new_tokens=8),
        "segment_answer": fresh_model().segment_answer(image, {question!r}, {answer!r}).masks,
        "pipeline": torch.from_numpy(np.asarray(segmenter(image, prompt=prompt)[0]["mask"]) > 0)[None],
    }}
    torch.save(outputs, {out!r})
    """


@pytest.fixture(scope="module")
def example():
    return next(example for example in load_demo_examples() if example.prompt == "the circle")


@pytest.fixture(scope="module")
def expected(example) -> dict:
    """The in-package model's outputs, its processor loaded the same way (from the model's folder)."""
    image = PIL.Image.open(DEMO_EXAMPLES / example.image)

    def fresh_model():
        return Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval()

    masks = fresh_model().segment(image, [example.prompt]).masks
    assert 0 < masks.float().mean() < 1  # a mask worth comparing
    return {
        "segment": masks,
        "chat": fresh_model().chat(image, QUESTION, max_new_tokens=8),
        "segment_answer": fresh_model().segment_answer(image, QUESTION, ANSWER).masks,
        "pipeline": masks,
    }


def run_remote_calls(model_id: str, example, tmp_path, hf_home=None) -> dict:
    script = REMOTE_CALLS.format(
        model_id=model_id,
        image=str(DEMO_EXAMPLES / example.image),
        prompt=example.prompt,
        question=QUESTION,
        answer=ANSWER,
        out=str(tmp_path / "outputs.pt"),
    )
    result = run_without_package(script, tmp_path, timeout=TIMEOUT, hf_home=hf_home)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert TRUST_QUESTION not in output, output[-3000:]
    assert MODEL_TYPE_WARNING not in output, output[-3000:]
    return torch.load(tmp_path / "outputs.pt")


def assert_same_outputs(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, str):
            assert actual[name] == value, name
        else:
            assert torch.equal(actual[name], value), name


def test_copied_folder_never_asks_again(example, expected, tmp_path):
    folder = tmp_path / "elsewhere" / "my-self1e"
    shutil.copytree(SHIPPED_MODEL, folder)
    assert_same_outputs(run_remote_calls(str(folder), example, tmp_path), expected)


def test_model_card_call_from_the_hub_cache_never_asks_again(example, expected, tmp_path):
    # The layout `hf download org/self1e-8b` leaves (with files instead of links to blobs), read offline.
    revision = "0123456789abcdef0123456789abcdef01234567"
    repository = tmp_path / "hf_home" / "hub" / "models--org--self1e-8b"
    shutil.copytree(SHIPPED_MODEL, repository / "snapshots" / revision)
    (repository / "refs").mkdir()
    (repository / "refs" / "main").write_text(revision)
    outputs = run_remote_calls("org/self1e-8b", example, tmp_path, hf_home=tmp_path / "hf_home")
    assert_same_outputs(outputs, expected)
