"""Loading a saved `Self1EConfig`: a config.json without a sub-config or with an invalid value is a `ValueError` that
names the problem and the model, while configs built in code keep their defaults."""

import json

import pytest
from transformers import Qwen2Config

from transformers_self1e import Self1EConfig
from transformers_self1e.presets import tiny_config


def save_without(tmp_path, *keys, **changes):
    content = {key: value for key, value in tiny_config().to_dict().items() if key not in keys}
    content.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(content))
    return tmp_path


@pytest.mark.parametrize("missing", [("text_config",), ("vision_config",), ("text_config", "vision_config")])
def test_saved_config_without_sub_configs_is_refused(tmp_path, missing):
    folder = save_without(tmp_path, *missing)
    expected = " and no ".join(repr(key) for key in missing)
    with pytest.raises(ValueError, match=f"invalid config.json in {folder}: the config has no {expected}"):
        Self1EConfig.from_pretrained(folder)


def test_invalid_values_are_value_errors_naming_the_field(tmp_path):
    folder = save_without(tmp_path, segmentation_attention="sideways")
    with pytest.raises(ValueError, match=f"{folder}: Field 'segmentation_attention' expected one of .*got sideways"):
        Self1EConfig.from_pretrained(folder)
    with pytest.raises(ValueError, match="downsample_ratio must be 1/k for an integer k, got 0.3"):
        Self1EConfig.from_dict({**tiny_config().to_dict(), "downsample_ratio": 0.3})


def test_configs_built_in_code_keep_the_defaults_and_round_trip(tmp_path):
    default = Self1EConfig()
    assert isinstance(default.text_config, Qwen2Config)
    default.save_pretrained(tmp_path / "default")
    assert Self1EConfig.from_pretrained(tmp_path / "default").to_dict().keys() == default.to_dict().keys()
    # A sub-config given as a keyword fills the gap in the saved dictionary.
    text_config = tiny_config().text_config.to_dict()
    content = {key: value for key, value in tiny_config().to_dict().items() if key != "text_config"}
    assert Self1EConfig.from_dict(content, text_config=text_config).text_config.hidden_size == 64
