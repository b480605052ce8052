"""The transformers API contract: transformers' own `ModelTesterMixin` and `ConfigTester`, from the source distribution
of the installed version (fetched once and cached, see `helpers.transformers_common`), run against a tiny
`Self1EForSegmentation`. Every skip below says why in one line."""

import unittest
from functools import partialmethod
from unittest.mock import patch

import torch
from helpers.transformers_common import import_common_tests

from transformers_self1e import Self1EConfig, Self1EForSegmentation
from transformers_self1e.presets import tiny_config

ModelTesterMixin, ConfigTester = import_common_tests()


# Token ids below 5: the common tests shrink the vocabulary (clamping ids) and pad with ids under 5.
IMAGE, SEG, TEXT = 3, 4, 20


class Self1EModelTester:
    """Batches of `batch_size` samples, each one tile of one image, a question and an answer with one `[SEG]`.

    7 samples: the eager-vs-sdpa test pads smaller batches to 7 rows with random text, which would leave image tiles
    without image tokens."""

    def __init__(self, parent: unittest.TestCase, batch_size: int = 7):
        self.parent = parent
        self.batch_size = batch_size
        self.is_training = True
        config = self.get_config()
        self.text_config = config.text_config
        self.vision_config = config.vision_config
        self.hidden_size = config.text_config.hidden_size
        self.num_hidden_layers = config.text_config.num_hidden_layers
        self.num_attention_heads = config.text_config.num_attention_heads
        self.image_size = config.tile_size
        self.tokens = [TEXT, TEXT + 1, *[IMAGE] * config.image_tokens_per_tile, TEXT + 2, TEXT + 3, SEG, TEXT + 4]
        self.seq_length = len(self.tokens)
        self.mask_size = config.mask_grid_size

    def get_config(self) -> Self1EConfig:
        return tiny_config(image_token_id=IMAGE, seg_token_id=SEG)

    def prepare_config_and_inputs_for_common(self) -> tuple[Self1EConfig, dict]:
        config = self.get_config()
        input_ids = torch.tensor([self.tokens] * self.batch_size)
        # Varied text, so that samples differ beyond their images.
        input_ids[:, 1] = torch.arange(self.batch_size) + 30
        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}
        return config, inputs


class Self1EModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (Self1EForSegmentation,)
    # The generation suite (tests/generation/test_utils.py) is not in the sdist; tests/modeling covers generate().
    all_generative_model_classes = (Self1EForSegmentation,)
    additional_model_inputs = ["pixel_values"]
    _is_composite = True  # a vision tower and a language model, each with its own sub-config

    def setUp(self) -> None:
        self.model_tester = Self1EModelTester(self)
        self.config_tester = ConfigTester(self, config_class=Self1EConfig, has_text_modality=False)

    def _prepare_for_class(self, inputs_dict: dict, model_class: type, return_labels: bool = False) -> dict:
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            # Both losses, so that training reaches every parameter (the mask head too).
            inputs_dict["labels"] = inputs_dict["input_ids"].clone()
            size = self.model_tester.mask_size
            inputs_dict["gt_masks"] = [torch.ones(1, size, size)] * self.model_tester.batch_size
        return inputs_dict

    def test_config(self) -> None:
        self.config_tester.run_common_tests()

    def test_reverse_loading_mapping(self) -> None:
        # SELF1E saves under its own parameter names unless asked (see `Self1EForSegmentation.save_pretrained`):
        # check the mapping transformers applies when it is asked for the original format.
        original_format = partialmethod(Self1EForSegmentation.save_pretrained, save_original_format=True)
        with patch.object(Self1EForSegmentation, "save_pretrained", original_format):
            super().test_reverse_loading_mapping()

    @unittest.skip("transformers' generation tests, which this checks for, are not in the sdist")
    def test_generation_tester_mixin_inheritance(self) -> None:
        pass

    @unittest.skip(
        "image and [SEG] positions are read from input_ids: inputs_embeds with pixel_values is a ValueError"
    )
    def test_inputs_embeds(self) -> None:
        pass
