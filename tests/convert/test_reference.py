"""Conversion of the authors' checkpoint layout, and parity with the reference record `tiny-112`."""

import json
import shutil

import pytest
import torch
from helpers.batches import REFERENCE_RECORD
from safetensors.torch import load_file, save_file

from transformers_self1e import Self1EForSegmentation
from transformers_self1e.convert import compare_with_record, convert_reference_checkpoint, load_reference_record
from transformers_self1e.convert.__main__ import main as convert_main

CHECKPOINT = REFERENCE_RECORD / "official_model.safetensors"
META = REFERENCE_RECORD / "meta.json"
PARITY = 1e-4


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert_reference_checkpoint(CHECKPOINT, META, tmp_path_factory.mktemp("converted"))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("use_prepared_mask", [False, True])
def test_parity_with_the_reference_record_in_eval_and_train_mode(converted, attn_implementation, use_prepared_mask):
    model = Self1EForSegmentation.from_pretrained(converted, attn_implementation=attn_implementation)
    record = load_reference_record(REFERENCE_RECORD)
    errors = compare_with_record(model, record, use_prepared_mask=use_prepared_mask)
    # All mask logits (eval mode) and all losses (train mode) of the record are compared.
    assert {"pred_mask_logits_0", "pred_mask_logits_1", "train_loss", "train_mask_dice_loss"} <= set(errors)
    assert max(errors.values()) < PARITY, errors


def test_command_verifies_a_record_and_works_on_any_record_of_the_format(tmp_path, capsys):
    other_record = tmp_path / "some-other-record"
    shutil.copytree(REFERENCE_RECORD, other_record)
    arguments = ["reference", "--checkpoint", str(CHECKPOINT), "--reference-config", str(other_record / "meta.json")]
    assert convert_main([*arguments, "--out", str(tmp_path / "out"), "--verify", str(other_record)]) == 0
    report = capsys.readouterr().out
    assert "pred_mask_logits_1" in report and "train_mask_bce_loss" in report and "within" in report

    # The same record with one expected value changed by 1 % must fail the check.
    tensors = load_file(other_record / "inputs_and_outputs.safetensors")
    tensors["pred_mask_logits_1"] = tensors["pred_mask_logits_1"] * 1.01
    save_file(tensors, other_record / "inputs_and_outputs.safetensors")
    assert convert_main([*arguments, "--out", str(tmp_path / "out2"), "--verify", str(other_record)]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_sharded_checkpoint_converts_to_the_same_weights(tmp_path, converted):
    state = load_file(CHECKPOINT)
    names = sorted(state)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    source = tmp_path / "sharded"
    source.mkdir()
    weight_map = {}
    for file_name, shard_names in shards.items():
        save_file({name: state[name] for name in shard_names}, source / file_name)
        weight_map.update({name: file_name for name in shard_names})
    (source / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    out = convert_reference_checkpoint(source, META, tmp_path / "out")
    assert (out / "model.safetensors.index.json").is_file()
    from_shards = Self1EForSegmentation.from_pretrained(out).state_dict()
    from_single = Self1EForSegmentation.from_pretrained(converted).state_dict()
    assert from_shards.keys() == from_single.keys()
    for name, tensor in from_single.items():
        assert torch.equal(from_shards[name], tensor), name


def test_bfloat16_conversion_stores_bfloat16(tmp_path):
    out = convert_reference_checkpoint(CHECKPOINT, META, tmp_path, dtype=torch.bfloat16)
    assert all(tensor.dtype == torch.bfloat16 for tensor in load_file(out / "model.safetensors").values())
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_plain_reference_config_reads_token_ids_from_the_tokenizer_files(tmp_path):
    meta = json.loads(META.read_text())
    (tmp_path / "config.json").write_text(json.dumps(meta["official_config"]))
    with pytest.raises(ValueError, match="ids of <IMG_CONTEXT> and \\[SEG\\] are unknown"):
        convert_reference_checkpoint(CHECKPOINT, tmp_path / "config.json", tmp_path / "out")
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<IMG_CONTEXT>": 90, "[SEG]": 93, "<img>": 91}))
    out = convert_reference_checkpoint(CHECKPOINT, tmp_path / "config.json", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert (config["image_token_id"], config["seg_token_id"]) == (90, 93)


class TestMalformedCheckpoints:
    def write(self, tmp_path, state):
        path = tmp_path / "broken.safetensors"
        save_file(state, path)
        return path

    def test_missing_keys_are_listed(self, tmp_path):
        state = load_file(CHECKPOINT)
        del state["combine_decode_proj.2.weight"], state["mlp1.1.bias"]
        with pytest.raises(ValueError, match="missing keys: .*seg_head.output_mlp.fc2.weight") as error:
            convert_reference_checkpoint(self.write(tmp_path, state), META, tmp_path / "out")
        assert "model.multi_modal_projector.linear_1.bias" in str(error.value)
        assert not (tmp_path / "out" / "model.safetensors").exists()

    def test_unexpected_keys_are_listed(self, tmp_path):
        state = load_file(CHECKPOINT)
        state["decoder.mask_tokens"] = torch.zeros(2)
        with pytest.raises(
            ValueError, match="unexpected keys \\(not part of the source layout\\): decoder.mask_tokens"
        ):
            convert_reference_checkpoint(self.write(tmp_path, state), META, tmp_path / "out")

    def test_shape_mismatches_are_listed(self, tmp_path):
        state = load_file(CHECKPOINT)
        state["combine_decode_proj_all.2.weight"] = torch.zeros(128, 64)
        with pytest.raises(ValueError, match="seg_head.llm_unshuffle_mlp.fc2.weight \\(128, 64\\) \\(config expects"):
            convert_reference_checkpoint(self.write(tmp_path, state), META, tmp_path / "out")

    def test_integer_tensor_where_a_float_weight_belongs(self, tmp_path):
        state = load_file(CHECKPOINT)
        state["mlp1.1.weight"] = (state["mlp1.1.weight"] * 1000).to(torch.int32)
        state["combine_decode_proj.0.bias"] = state["combine_decode_proj.0.bias"] > 0
        with pytest.raises(ValueError, match="dtype mismatches: ") as error:
            convert_reference_checkpoint(self.write(tmp_path, state), META, tmp_path / "out", dtype=torch.bfloat16)
        message = str(error.value)
        assert "mlp1.1.weight is int32, but the model's model.multi_modal_projector.linear_1.weight" in message
        assert "combine_decode_proj.0.bias is bool" in message
        assert not (tmp_path / "out").exists()

    def test_truncated_checkpoint_is_named(self, tmp_path):
        truncated = tmp_path / "truncated.safetensors"
        truncated.write_bytes(CHECKPOINT.read_bytes()[:-1000])
        with pytest.raises(ValueError, match=f"{truncated} is not a readable safetensors file"):
            convert_reference_checkpoint(truncated, META, tmp_path / "out")

    def test_missing_shard_and_missing_files(self, tmp_path):
        (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "gone.safetensors"}}))
        with pytest.raises(FileNotFoundError, match="gone.safetensors"):
            convert_reference_checkpoint(tmp_path, META, tmp_path / "out")
        with pytest.raises(FileNotFoundError, match="neither a .safetensors file"):
            convert_reference_checkpoint(tmp_path / "nothing.bin", META, tmp_path / "out")

    def test_command_reports_errors_with_exit_code_2(self, tmp_path, capsys):
        state = load_file(CHECKPOINT)
        del state["mlp1.3.weight"]
        arguments = ["reference", "--checkpoint", str(self.write(tmp_path, state)), "--reference-config", str(META)]
        assert convert_main([*arguments, "--out", str(tmp_path / "out")]) == 2
        assert "missing keys: model.multi_modal_projector.linear_2.weight" in capsys.readouterr().err
