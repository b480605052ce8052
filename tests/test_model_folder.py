"""Broken model folders give one error naming the file and the problem, from `check_model_folder` and, where the
problem is met inside `from_pretrained`, from the loaders themselves."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from transformers_self1e import Self1EConfig, Self1EForSegmentation, Self1EProcessor
from transformers_self1e.demo import SHIPPED_MODEL
from transformers_self1e.model_folder import check_model_folder, load_model_and_processor


@pytest.fixture
def folder(tmp_path):
    """A copy of the shipped model folder to break."""
    return shutil.copytree(SHIPPED_MODEL, tmp_path / "model")


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_intact_folder_loads_for_inference(folder):
    config = check_model_folder(folder)
    assert config.to_diff_dict() == Self1EConfig.from_pretrained(folder).to_diff_dict()
    model, processor = load_model_and_processor(folder, dtype=torch.bfloat16)
    assert not model.training and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert processor.check_model_config(model.config, raise_error=False) == []


def test_truncated_weights(folder):
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file \\(truncated or corrupt"):
        check_model_folder(folder)


def test_weights_that_do_not_fit_the_config(folder):
    state = load_file(folder / "model.safetensors")
    state["lm_head.weight"] = state["lm_head.weight"].to(torch.int32)
    del state["seg_head.output_mlp.fc2.bias"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=f"the weights of {folder} \\(model.safetensors\\) do not fit") as error:
        check_model_folder(folder)
    assert "missing keys: seg_head.output_mlp.fc2.bias" in str(error.value)
    assert "lm_head.weight is int32, but the model's lm_head.weight is floating-point" in str(error.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_config_that_is_not_a_json_object(folder, content):
    (folder / "config.json").write_text(content)
    with pytest.raises(ValueError, match=f"{folder / 'config.json'} (is not valid JSON|holds a JSON list)"):
        check_model_folder(folder)


def test_config_of_another_model_type(folder):
    edit_config(folder, model_type="internvl")
    with pytest.raises(ValueError, match="describes a model of type 'internvl', not a Self1E model"):
        check_model_folder(folder)


def test_bad_image_feature_path(folder):
    edit_config(folder, image_feature_path="residual")
    expected = "image_feature_path' expected one of \\('llm_low_res', .*got residual"
    with pytest.raises(ValueError, match=f"{folder / 'config.json'} is not a valid Self1E config: .*{expected}"):
        check_model_folder(folder)
    # The model's own loader names the folder too.
    with pytest.raises(ValueError, match=f"invalid config.json in {folder}: .*{expected}"):
        Self1EForSegmentation.from_pretrained(folder)


@pytest.mark.parametrize("missing", ["text_config", "vision_config"])
def test_config_without_a_sub_config(folder, missing):
    config = json.loads((folder / "config.json").read_text())
    del config[missing]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"config.json is not a valid Self1E config: the config has no '{missing}'"):
        check_model_folder(folder)


def test_no_processor_files(folder):
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"{folder} has no processor files \\(processor_config.json"):
        check_model_folder(folder)


def test_no_tokenizer_vocabulary(folder):
    (folder / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match=f"{folder / 'tokenizer.json'} is missing"):
        check_model_folder(folder)
    # Loading the processor alone says the same, instead of a disagreement about <IMG_CONTEXT> later.
    with pytest.raises(ValueError, match=f"the tokenizer of {folder} has no vocabulary.*tokenizer.json"):
        Self1EProcessor.from_pretrained(folder)


def test_processor_that_does_not_fit_the_model(folder, monkeypatch):
    config = json.loads((folder / "config.json").read_text())
    edit_config(folder, image_token_id=config["image_token_id"] - 1)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(Self1EForSegmentation, "from_pretrained", no_weights)
    with pytest.raises(ValueError, match=f"the processor files in {folder} do not fit its config.json"):
        load_model_and_processor(folder)


def test_missing_folder_and_weights(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="no model folder at"):
        check_model_folder(tmp_path / "nothing")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no weights \\(model.safetensors or model.safetensors.index"):
        check_model_folder(folder)
