"""The output folder of a conversion: nothing the converter did not write is deleted or overwritten, the input is never
the output, and every output problem is found before a weight is read."""

import json
import os
import shutil

import pytest
import torch
from helpers.batches import REFERENCE_RECORD
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from transformers_self1e import Self1EForSegmentation, Self1EImageProcessor, Self1EProcessor
from transformers_self1e.convert import convert_reference_checkpoint, folder_writer, output_folder
from transformers_self1e.convert.__main__ import main as convert_main
from transformers_self1e.demo import SHIPPED_MODEL

CHECKPOINT = REFERENCE_RECORD / "official_model.safetensors"
META = REFERENCE_RECORD / "meta.json"


def reference_command(checkpoint, out, *options) -> list[str]:
    return ["reference", "--checkpoint", str(checkpoint), "--reference-config", str(META), "--out", str(out), *options]


def snapshot(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.fixture
def user_folder(tmp_path):
    """A folder of a user's files, with names like the converter's."""
    folder = tmp_path / "models"
    folder.mkdir()
    save_file({"w": torch.ones(2)}, folder / "model_backup.safetensors")
    save_file({"w": torch.zeros(2)}, folder / "model-finetuned-epoch3.safetensors")
    (folder / "config.json").write_text(json.dumps({"note": "my config"}))
    return folder


@pytest.fixture
def no_weight_reading(monkeypatch):
    """Fails the test if the converter starts reading weights."""

    def refuse(shard):
        raise AssertionError(f"weights of {shard} were read")

    monkeypatch.setattr(folder_writer, "iter_shard_tensors", refuse)


def test_non_empty_output_is_refused_without_overwrite(user_folder, capsys, no_weight_reading):
    before = snapshot(user_folder)
    assert convert_main(reference_command(CHECKPOINT, user_folder)) == 2
    error = capsys.readouterr().err
    assert f"{user_folder} is not empty" in error and "--overwrite" in error
    assert snapshot(user_folder) == before


def test_overwrite_replaces_only_the_converters_files(user_folder, tmp_path):
    (user_folder / "model.safetensors").write_bytes(b"an old model")
    kept = {name: data for name, data in snapshot(user_folder).items() if name != "model.safetensors"}
    kept.pop("config.json")

    assert convert_main(reference_command(CHECKPOINT, user_folder, "--overwrite")) == 0
    fresh = convert_reference_checkpoint(CHECKPOINT, META, tmp_path / "fresh")
    after = snapshot(user_folder)
    assert {name: after[name] for name in kept} == kept  # the user's files, byte for byte
    assert after.keys() == kept.keys() | set(snapshot(fresh))
    assert after["config.json"] == (fresh / "config.json").read_bytes()
    new_weights, expected = load_file(user_folder / "model.safetensors"), load_file(fresh / "model.safetensors")
    assert new_weights.keys() == expected.keys()
    assert all(torch.equal(new_weights[name], expected[name]) for name in expected)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fresh", "models"]  # no staging folder left


def test_failed_overwrite_leaves_the_folder_as_it_was(user_folder, tmp_path, monkeypatch):
    (user_folder / "model.safetensors").write_bytes(b"an old model")
    before = snapshot(user_folder)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder_writer, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        convert_reference_checkpoint(CHECKPOINT, META, user_folder, overwrite=True)
    assert snapshot(user_folder) == before
    assert [path.name for path in tmp_path.iterdir()] == ["models"]


@pytest.mark.parametrize("out", ["checkpoint folder", "parent of the checkpoint folder", "folder of the config"])
def test_the_input_is_never_the_output(tmp_path, capsys, out, no_weight_reading):
    source = tmp_path / "parent" / "checkpoint"
    source.mkdir(parents=True)
    shutil.copy(CHECKPOINT, source / "model.safetensors")
    shutil.copy(META, source / "meta.json")
    checkpoint, config = source / "model.safetensors", META
    if out == "folder of the config":
        checkpoint, config = CHECKPOINT, source / "meta.json"
    out_dir = source.parent if out == "parent of the checkpoint folder" else source
    command = reference_command(checkpoint, out_dir, "--overwrite")
    command[command.index("--reference-config") + 1] = str(config)
    before = snapshot(source)
    assert convert_main(command) == 2
    assert f"the output folder {out_dir} holds the input" in capsys.readouterr().err
    assert snapshot(source) == before


def test_output_paths_are_checked_before_any_weight_is_read(tmp_path, capsys, monkeypatch, no_weight_reading):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    assert convert_main(reference_command(CHECKPOINT, a_file, "--overwrite")) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert convert_main(reference_command(CHECKPOINT, a_file / "model")) == 2
    assert f"{a_file} is a file" in capsys.readouterr().err

    read_only = tmp_path / "read-only"
    monkeypatch.setattr(output_folder.os, "access", lambda path, mode: os.fspath(path) != str(read_only))
    read_only.mkdir()
    assert convert_main(reference_command(CHECKPOINT, read_only / "new" / "model")) == 2
    assert f"cannot write to {read_only}" in capsys.readouterr().err
    assert not (read_only / "new").exists()


def test_weights_the_conversion_does_not_replace_block_overwrite(tmp_path, capsys, no_weight_reading):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002"}}))
    assert convert_main(reference_command(CHECKPOINT, out, "--overwrite")) == 2
    assert "holds model.safetensors.index.json, which the conversion does not replace" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["model.safetensors.index.json"]


def test_processor_files_that_do_not_fit_the_new_model_block_overwrite(tmp_path, capsys):
    # The shipped model's tokenizer puts <IMG_CONTEXT> at 412, the record's model expects 90.
    out = tmp_path / "shipped-copy"
    shutil.copytree(SHIPPED_MODEL, out)
    before = snapshot(out)
    assert convert_main(reference_command(CHECKPOINT, out, "--overwrite")) == 2
    error = capsys.readouterr().err
    assert "processor files (" in error and "tokenizer.json" in error and "image_token_id=90" in error
    assert snapshot(out) == before


def word_level_processor() -> Self1EProcessor:
    """A processor for the record's 112-px tiles whose tokenizer has three words, so [SEG] fits its 100 rows."""
    backend = Tokenizer(models.WordLevel({"<unk>": 0, "the": 1, "cat": 2}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    return Self1EProcessor(Self1EImageProcessor(size=112), tokenizer, image_seq_length=16)


def test_processor_files_that_fit_the_new_model_are_kept(tmp_path):
    out = tmp_path / "out"
    processor = word_level_processor()
    processor.save_pretrained(out)
    (out / "notes.txt").write_text("kept")
    before = snapshot(out)
    ids = {"image_token_id": processor.image_token_id, "seg_token_id": processor.seg_token_id}
    with pytest.raises(ValueError, match="seg_token_id=93 but the tokenizer's \\[SEG\\] is"):
        convert_reference_checkpoint(CHECKPOINT, META, out, overwrite=True)
    assert snapshot(out) == before

    convert_reference_checkpoint(CHECKPOINT, META, out, overwrite=True, **ids)
    after = snapshot(out)
    assert {name: after[name] for name in before} == before
    model = Self1EForSegmentation.from_pretrained(out)
    Self1EProcessor.from_pretrained(out).check_model_config(model.config)
