"""`from_pretrained(..., device_map="auto", max_memory=...)`: the shipped model split between memory and disk (weights
loaded only around each module's forward by accelerate's hooks) gives the masks of the model loaded whole."""

import pytest
import torch
from transformers import AutoModel

import transformers_self1e  # noqa: F401 - registers SELF1E with the Auto classes
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL

PROMPTS = ["the leftmost shape", "the green circle", "the circle"]
IMAGE = DEMO_EXAMPLES / "01-position-regular.png"


@pytest.fixture(scope="module")
def whole_model_result():
    return AutoModel.from_pretrained(SHIPPED_MODEL).eval().segment(str(IMAGE), PROMPTS)


def test_head_and_projector_are_never_split():
    model = AutoModel.from_pretrained(SHIPPED_MODEL)
    assert {"Self1ESegmentationHead", "InternVLMultiModalProjector", "InternVLVisionEmbeddings"} <= set(
        model._no_split_modules
    )


# The shipped model's weights take about 8.6 MB: these budgets put the head, the projector and the language model on
# disk, with the vision tower in memory (whole, or cut between its layers).
@pytest.mark.parametrize("cpu_memory", ["2MB", "1500KB"])
def test_offloaded_model_gives_the_same_masks(tmp_path, whole_model_result, cpu_memory):
    model = AutoModel.from_pretrained(
        SHIPPED_MODEL, device_map="auto", max_memory={"cpu": cpu_memory}, offload_folder=tmp_path
    ).eval()
    placement = model.hf_device_map
    assert {placement["seg_head"], placement["model.multi_modal_projector"], placement["model.language_model"]} == {
        "disk"
    }, placement
    assert "cpu" in placement.values(), placement
    result = model.segment(str(IMAGE), PROMPTS)
    assert torch.equal(result.masks, whole_model_result.masks)
    torch.testing.assert_close(result.scores, whole_model_result.scores)


@pytest.mark.parametrize(
    "device_map", [{"": "disk"}, {"model": "disk", "lm_head": "cpu", "seg_head": "cpu"}], ids=["all", "model"]
)
def test_maps_that_offload_the_first_weights_give_the_same_masks(tmp_path, whole_model_result, device_map):
    # The model's first parameters then sit on the meta device: inputs go to accelerate's execution device instead.
    model = AutoModel.from_pretrained(SHIPPED_MODEL, device_map=device_map, offload_folder=tmp_path).eval()
    assert model.device.type == "meta"
    result = model.segment(str(IMAGE), PROMPTS)
    assert torch.equal(result.masks, whole_model_result.masks)
    torch.testing.assert_close(result.scores, whole_model_result.scores)
    assert "[SEG]" in model.chat(str(IMAGE), "Where is the circle?", max_new_tokens=12)
