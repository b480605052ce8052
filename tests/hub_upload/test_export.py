"""`python -m hub_upload export`: a self-contained Hub folder that loads without the package."""

import json
import shutil

import pytest
import torch
from helpers.pairs import random_image, tiny_model_and_processor
from helpers.remote_code import run_without_package
from huggingface_hub import ModelCard

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.hub_upload import export_hub_folder
from transformers_self1e.hub_upload.__main__ import main as hub_main
from transformers_self1e.hub_upload.hub_layout import MODELING_DIR
from transformers_self1e.hub_upload.model_card import infer_base_model
from transformers_self1e.presets import internvl3_2b_config, internvl3_8b_config, tiny_config

RESULTS = [
    {"dataset": "RefCOCO", "split": "val", "metric": "cIoU", "value": 81.23, "dataset_id": "lmms-lab/RefCOCO"},
    {"dataset": "RefCOCO", "split": "val", "metric": "gIoU", "value": 82.5},
    {"dataset": "ReasonSeg", "split": "val", "metric": "gIoU", "value": 65.0},
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model saved with its processor, exported through the command line in small shards."""
    model, processor = tiny_model_and_processor(image_kwargs={"max_tiles": 4})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # With the default init (std 0.02) the mask logits are ~1e-8: give them a size worth comparing.
        for parameter in model.seg_head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.15)
    root = tmp_path_factory.mktemp("export")
    model.save_pretrained(root / "saved")
    processor.save_pretrained(root / "saved")
    (root / "results.json").write_text(json.dumps(RESULTS))
    arguments = [
        "export", str(root / "saved"), "--out", str(root / "hub"), "--max-shard-size", "300KB",
        "--results", str(root / "results.json"), "--base-model", "OpenGVLab/InternVL3-2B",
        "--dataset", "lmms-lab/RefCOCO", "--license", "mit", "--repo-id", "someone/self1e-tiny",
    ]  # fmt: skip
    assert hub_main(arguments) == 0
    return root / "hub", model, processor


def test_folder_has_sharded_weights_config_processor_and_generation_config(exported):
    folder, model, processor = exported
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all((folder / shard).is_file() for shard in shards)
    assert set(index["weight_map"]) == set(model.state_dict())

    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_self1e.Self1EConfig",
        "AutoModel": "modeling_self1e.Self1EForSegmentation",
        "AutoProcessor": "processing_self1e.Self1EProcessor",
        "AutoImageProcessor": "image_processing_self1e.Self1EImageProcessor",
    }
    assert config["custom_pipelines"] == {
        "image-segmentation": {
            "impl": "pipeline_self1e.Self1EImageSegmentationPipeline",
            "pt": ["AutoModel"],
            "tf": [],
            "type": "multimodal",
        }
    }
    for name in ("processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    assert (folder / "chat_template.jinja").read_text() == processor.chat_template
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert generation["pad_token_id"] == processor.tokenizer.pad_token_id


def test_remote_code_is_exactly_the_modeling_directory(exported):
    folder, _, _ = exported
    expected = {path.name: path.read_bytes() for path in MODELING_DIR.glob("*.py")}
    assert {path.name: path.read_bytes() for path in folder.glob("*.py")} == expected
    assert "pipeline_self1e.py" in expected


def test_model_card_metadata_usage_and_results(exported):
    folder, _, _ = exported
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert (data.license, data.library_name, data.pipeline_tag) == ("mit", "transformers", "image-segmentation")
    assert data.base_model == "OpenGVLab/InternVL3-2B"
    assert data.datasets == ["lmms-lab/RefCOCO"] and "self1e" in data.tags
    assert {(result.dataset_name, result.metric_name, result.metric_value) for result in data.eval_results} == {
        ("RefCOCO", "cIoU", 81.23),
        ("RefCOCO", "gIoU", 82.5),
        ("ReasonSeg", "gIoU", 65.0),
    }
    assert 'AutoModel.from_pretrained("someone/self1e-tiny", trust_remote_code=True' in card.text
    assert "model.segment(image, [" in card.text
    assert 'pipeline("image-segmentation", model="someone/self1e-tiny", trust_remote_code=True)' in card.text
    assert 'prompt="the red car on the left"' in card.text
    assert "| dataset | split | cIoU | gIoU |" in card.text
    assert "| RefCOCO | val | 81.23 | 82.5 |" in card.text and "| ReasonSeg | val | – | 65.0 |" in card.text


def test_folder_loads_in_a_fresh_process_without_the_package(exported, tmp_path):
    folder, model, processor = exported
    image = random_image(100, 230, seed=1)
    image.save(tmp_path / "image.png")
    prompts = ["the red car", "a dog"]
    inputs = processor.prepare_segmentation_inputs(image, prompts)
    with torch.no_grad():
        expected = model(**inputs).pred_masks
    assert all(masks.abs().min() > 0 for masks in expected)
    probabilities = model.segment(image, prompts[0], processor=processor, return_probabilities=True).probabilities
    threshold = float(probabilities.median())  # a mask with something in it, whatever the random weights give
    segmented = model.segment(image, prompts[0], processor=processor, threshold=threshold)
    assert 0 < segmented.masks[0].float().mean() < 1
    torch.save(
        {"input_ids": inputs["input_ids"], "pred_masks": expected, "mask": segmented.masks[0], "threshold": threshold},
        tmp_path / "expected.pt",
    )
    script = f"""
        import numpy as np
        import PIL.Image
        import torch
        from transformers import AutoModel, AutoProcessor, pipeline

        folder, expected = {str(folder)!r}, torch.load({str(tmp_path / "expected.pt")!r})
        image = PIL.Image.open({str(tmp_path / "image.png")!r})
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        inputs = processor.prepare_segmentation_inputs(image, {prompts!r})
        assert torch.equal(inputs["input_ids"], expected["input_ids"])
        with torch.no_grad():
            masks = model(**inputs).pred_masks
        for actual, wanted in zip(masks, expected["pred_masks"], strict=True):
            torch.testing.assert_close(actual, wanted, rtol=1e-5, atol=1e-5)
        segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
        output = segmenter(image, prompt={prompts[0]!r}, threshold=expected["threshold"])
        assert [entry["label"] for entry in output] == [{prompts[0]!r}]
        assert torch.equal(torch.from_numpy(np.asarray(output[0]["mask"]) > 0), expected["mask"])
        print("loaded")
        """
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("loaded")


def test_converted_folder_with_a_tokenizer_only(exported, tmp_path):
    # A converted checkpoint has weights and config; the processor is built from a tokenizer folder.
    _, model, processor = exported
    model.save_pretrained(tmp_path / "converted")
    processor.tokenizer.save_pretrained(tmp_path / "tokenizer")
    out = export_hub_folder(tmp_path / "converted", tmp_path / "hub", processor=tmp_path / "tokenizer")
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    saved = json.loads((out / "processor_config.json").read_text())
    assert saved["image_seq_length"] == model.config.image_tokens_per_tile
    assert saved["image_processor"]["size"] == {"height": 112, "width": 112}
    assert Self1EProcessor.from_pretrained(out).token_ids == processor.token_ids


def test_export_never_removes_a_folder_it_did_not_create(exported, tmp_path):
    # A folder named like the staging folder of an older version of the tool, holding someone's work.
    _, model, processor = exported
    (tmp_path / ".hub.partial").mkdir()
    (tmp_path / ".hub.partial" / "notes.txt").write_text("mine")
    out = export_hub_folder(model, tmp_path / "hub", processor=processor)
    assert (tmp_path / ".hub.partial" / "notes.txt").read_text() == "mine"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".hub.partial", "hub"]  # nothing of its own left
    assert (out / "model.safetensors").is_file() and not any(path.is_symlink() for path in out.iterdir())


def test_overwrite_replaces_a_folder_of_files_only(exported, tmp_path):
    _, model, processor = exported
    out = tmp_path / "hub"
    out.mkdir()
    (out / "model-00001-of-00009.safetensors").write_bytes(b"an older export's shard")
    export_hub_folder(model, out, processor=processor, overwrite=True)
    assert not (out / "model-00001-of-00009.safetensors").exists() and (out / "model.safetensors").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hub"]

    # A clone of the Hub repository: its .git is not the tool's to delete.
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref: refs/heads/main")
    with pytest.raises(FileExistsError, match=r"holds folders an export does not write \(\.git\)"):
        export_hub_folder(model, out, processor=processor, overwrite=True)
    assert (out / ".git" / "HEAD").read_text() == "ref: refs/heads/main" and (out / "model.safetensors").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hub"]


def test_sync_code_replaces_only_the_remote_code_files(exported, tmp_path, capsys):
    folder = tmp_path / "hub"
    shutil.copytree(exported[0], folder)
    (folder / "mask_losses.py").write_text("# stale\n")
    (folder / "segmentation_head.py").unlink()
    (folder / "segmentation_head.py").symlink_to(MODELING_DIR / "segmentation_head.py")
    (folder / "notes.txt").write_text("mine")
    untouched = (folder / "modeling_self1e.py").stat().st_ino
    assert hub_main(["sync-code", str(folder)]) == 0
    assert "replaced mask_losses.py, segmentation_head.py" in capsys.readouterr().out
    assert {path.name: path.read_bytes() for path in folder.glob("*.py")} == {
        path.name: path.read_bytes() for path in MODELING_DIR.glob("*.py")
    }
    assert not (folder / "segmentation_head.py").is_symlink()
    assert (folder / "modeling_self1e.py").stat().st_ino == untouched
    assert (folder / "notes.txt").read_text() == "mine"
    assert not [path.name for path in folder.iterdir() if path.name.startswith(".")]
    assert hub_main(["sync-code", str(folder)]) == 0
    assert "code up to date" in capsys.readouterr().out


def test_sync_code_refuses_other_folders(exported, tmp_path, capsys):
    assert hub_main(["sync-code", str(tmp_path)]) == 2
    assert "has no config.json" in capsys.readouterr().err

    folder = tmp_path / "hub"
    shutil.copytree(exported[0], folder)
    (folder / "helper.py").write_text("# someone's\n")
    (folder / "mask_losses.py").write_text("# stale\n")
    assert hub_main(["sync-code", str(folder)]) == 2
    assert "Python files that are not in modeling/: helper.py" in capsys.readouterr().err
    assert (folder / "mask_losses.py").read_text() == "# stale\n"  # checked before anything is written

    (folder / "helper.py").unlink()
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"]["AutoModel"] = "modeling_other.OtherModel"
    (folder / "config.json").write_text(json.dumps(config))
    assert hub_main(["sync-code", str(folder)]) == 2
    assert "does not have the auto_map of a SELF1E Hub folder" in capsys.readouterr().err


def test_export_errors_exit_with_code_2(exported, tmp_path, capsys):
    folder, model, processor = exported
    assert hub_main(["export", str(folder), "--out", str(folder)]) == 2
    assert "is not empty" in capsys.readouterr().err

    # A processor whose [SEG] is not the model's.
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    config["seg_token_id"] = 7
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    assert hub_main(["export", str(tmp_path / "model"), "--out", str(tmp_path / "out")]) == 2
    assert "config.seg_token_id=7 but the tokenizer's [SEG] is" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    (tmp_path / "bad.json").write_text(json.dumps([{"dataset": "RefCOCO", "value": "high"}]))
    arguments = ["export", str(folder), "--out", str(tmp_path / "out2"), "--results", str(tmp_path / "bad.json")]
    assert hub_main(arguments) == 2
    assert "result 0 needs 'dataset', 'metric' and a numeric 'value'" in capsys.readouterr().err


def test_base_model_is_inferred_for_internvl3_sizes():
    assert infer_base_model(internvl3_8b_config()) == "OpenGVLab/InternVL3-8B"
    assert infer_base_model(internvl3_2b_config()) == "OpenGVLab/InternVL3-2B"
    assert infer_base_model(tiny_config()) is None


def error_line(capsys) -> str:
    """The one line a failed command wrote to stderr, which must be an `error:` line."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_local_path_without_a_model_is_never_sent_to_the_hub(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("no model here")
    (tmp_path / "outputs").mkdir()
    for model, message in [
        ("notes", "no SELF1E model in notes (no config.json)"),
        (str(tmp_path / "notes"), f"no SELF1E model in {tmp_path / 'notes'} (no config.json)"),
        ("./missing", "no model folder at ./missing"),
        ("outputs/missing", "no model folder at outputs/missing"),  # `outputs` exists: a path, not an org
        ("a/b/c", "no model folder at a/b/c"),
        ("~/missing", "no model folder at ~/missing"),
    ]:
        assert hub_main(["export", model, "--out", str(tmp_path / "hub")]) == 2
        assert error_line(capsys) == f"error: {message}"
    assert not (tmp_path / "hub").exists()


def test_a_processor_path_without_a_processor_is_never_sent_to_the_hub(exported, tmp_path, capsys):
    folder, _, _ = exported
    assert hub_main(["export", str(folder), "--out", str(tmp_path / "hub"), "--processor", "./missing"]) == 2
    assert error_line(capsys) == "error: no processor folder at ./missing"
    assert not (tmp_path / "hub").exists()


def test_a_hub_id_that_cannot_be_loaded_is_one_error_line(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the Hub.\nCheck your internet connection.")

    monkeypatch.setattr(Self1EForSegmentation, "from_pretrained", offline)
    monkeypatch.chdir(tmp_path)
    assert hub_main(["export", "someone/self1e-tiny", "--out", str(tmp_path / "hub")]) == 2
    line = error_line(capsys)
    assert "someone/self1e-tiny is not a local folder, and loading it from the Hub failed" in line
    assert "We couldn't connect to the Hub." in line


def test_a_bad_shard_size_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --max-shard-size was checked")

    monkeypatch.setattr(Self1EForSegmentation, "from_pretrained", no_loading)
    for size in ("big", "1.5GB", "-1GB"):
        assert hub_main(["export", "org/model", "--out", str(tmp_path / "hub"), f"--max-shard-size={size}"]) == 2
        assert f"max_shard_size must be a positive size such as '5GB', '300KB' or bytes, got {size!r}" in error_line(
            capsys
        )


def test_an_unreadable_results_file_is_one_error_line(exported, tmp_path, capsys):
    folder, _, _ = exported
    random_image(4, 4).save(tmp_path / "image.png")
    for results, message in [
        (tmp_path / "missing.json", f"no results file at {tmp_path / 'missing.json'}"),
        (tmp_path, f"no results file at {tmp_path}"),
        (tmp_path / "image.png", f"{tmp_path / 'image.png'} is not a JSON file of results"),
    ]:
        arguments = ["export", str(folder), "--out", str(tmp_path / "hub"), "--results", str(results)]
        assert hub_main(arguments) == 2
        assert error_line(capsys).startswith(f"error: {message}")
    assert not (tmp_path / "hub").exists()


def test_an_output_folder_that_cannot_be_created_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr(Self1EForSegmentation, "from_pretrained", no_loading)
    (tmp_path / "a-file").write_text("not a folder")
    assert hub_main(["export", "org/model", "--out", str(tmp_path / "a-file" / "hub")]) == 2
    assert (
        error_line(capsys)
        == f"error: cannot create the folder {tmp_path / 'a-file' / 'hub'}: {tmp_path / 'a-file'} is a file"
    )
