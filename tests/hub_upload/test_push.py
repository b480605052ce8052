"""`python -m hub_upload push`: checks before anything leaves the machine, then `create_repo` / `upload_folder`
(mocked: nothing here contacts the Hub)."""

import json
import shutil
from unittest import mock

import pytest
import torch
from helpers.pairs import tiny_model_and_processor
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file
from transformers_self1e.hub_upload import export_hub_folder
from transformers_self1e.hub_upload.__main__ import main as hub_main
from transformers_self1e.hub_upload.export import sync_remote_code

from transformers_self1e.demo import SHIPPED_MODEL


@pytest.fixture(autouse=True)
def offline_without_token(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, processor = tiny_model_and_processor()
    return export_hub_folder(
        model, tmp_path_factory.mktemp("push") / "hub", processor=processor, max_shard_size="300KB"
    )


@pytest.fixture
def hub_api():
    """`HfApi`'s network methods, replaced by mocks."""
    commit = mock.Mock(commit_url="https://huggingface.co/someone/self1e-tiny/commit/abc")
    with (
        mock.patch.object(HfApi, "create_repo") as create_repo,
        mock.patch.object(HfApi, "create_branch") as create_branch,
        mock.patch.object(HfApi, "upload_folder", return_value=commit) as upload_folder,
    ):
        yield mock.Mock(create_repo=create_repo, create_branch=create_branch, upload_folder=upload_folder)


def shard_names(folder) -> list[str]:
    return sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))


def broken_copy(exported, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(exported, folder)
    return folder


def edit_json(path, edit) -> None:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))


def test_dry_run_checks_and_lists_files_without_contacting_the_hub(exported, hub_api, capsys):
    assert hub_main(["push", str(exported), "--repo-id", "someone/self1e-tiny", "--dry-run"]) == 0
    output = capsys.readouterr().out
    assert (
        "passed every check (model loaded fully, one forward pass finite); would upload to someone/self1e-tiny"
        in output
    )
    for name in ("config.json", "model.safetensors.index.json", "modeling_self1e.py", "README.md"):
        assert f"  {name} " in output
    size = (exported / shard_names(exported)[0]).stat().st_size
    assert f"{size / 1000:.1f} KB" in output and "files," in output
    hub_api.create_repo.assert_not_called()
    hub_api.upload_folder.assert_not_called()


def test_dry_run_on_the_meta_device(exported, hub_api, capsys):
    assert hub_main(["push", str(exported), "--repo-id", "someone/self1e-tiny", "--dry-run", "--meta-load"]) == 0
    assert "checked on the meta device: no forward pass, weights scanned for NaN/inf" in capsys.readouterr().out


@pytest.fixture
def skip_load_check():
    """The static checks stay; the (slow) fresh-interpreter load, covered by the dry-run tests, is skipped."""
    with mock.patch("transformers_self1e.hub_upload.folder_check.load_problems", return_value=[]) as load_problems:
        yield load_problems


def test_push_creates_the_repository_and_uploads_the_folder(exported, hub_api, skip_load_check, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    arguments = ["push", str(exported), "--repo-id", "someone/self1e-tiny", "--private", "--revision", "v1"]
    assert hub_main([*arguments, "--commit-message", "SELF1E tiny"]) == 0
    assert "uploaded" in capsys.readouterr().out
    hub_api.create_repo.assert_called_once_with("someone/self1e-tiny", private=True, repo_type="model", exist_ok=True)
    hub_api.create_branch.assert_called_once_with("someone/self1e-tiny", branch="v1", repo_type="model", exist_ok=True)
    hub_api.upload_folder.assert_called_once_with(
        repo_id="someone/self1e-tiny",
        folder_path=exported,
        repo_type="model",
        revision="v1",
        commit_message="SELF1E tiny",
        ignore_patterns=["*.pyc", "__pycache__/*", "*/__pycache__/*"],
    )
    skip_load_check.assert_called_once()


def test_push_to_main_with_an_explicit_token(exported, hub_api, skip_load_check):
    with mock.patch("transformers_self1e.hub_upload.push.HfApi", wraps=HfApi) as api_class:
        assert hub_main(["push", str(exported), "--repo-id", "someone/self1e-tiny", "--token", "hf_explicit"]) == 0
    api_class.assert_called_once_with(token="hf_explicit")
    hub_api.create_repo.assert_called_once_with("someone/self1e-tiny", private=None, repo_type="model", exist_ok=True)
    hub_api.create_branch.assert_not_called()
    assert hub_api.upload_folder.call_args.kwargs["revision"] is None
    assert hub_api.upload_folder.call_args.kwargs["commit_message"] == "Upload SELF1E model"


def test_push_without_a_token_fails_before_any_request(exported, hub_api, capsys):
    assert hub_main(["push", str(exported), "--repo-id", "someone/self1e-tiny"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    hub_api.create_repo.assert_not_called()


def break_by_removing_a_code_file(folder):
    (folder / "segmentation_head.py").unlink()


def break_auto_map(folder):
    edit_json(
        folder / "config.json", lambda config: config["auto_map"].update(AutoModel="modeling_self1e.Self1EModel")
    )


def break_processor_auto_map(folder):
    edit_json(folder / "processor_config.json", lambda config: config.pop("auto_map"))


def break_pipeline(folder):
    edit_json(
        folder / "config.json",
        lambda config: config["custom_pipelines"]["image-segmentation"].update(impl="pipeline_self1e.Missing"),
    )


def break_by_removing_a_shard(folder):
    (folder / shard_names(folder)[1]).unlink()


def break_index(folder):
    first = shard_names(folder)[0]
    edit_json(
        folder / "model.safetensors.index.json", lambda index: index["weight_map"].update({"lm_head.weight": first})
    )


def break_by_editing_remote_code(folder):
    (folder / "mask_losses.py").write_text((folder / "mask_losses.py").read_text() + "\n# edited by hand\n")


def break_by_removing_the_tokenizer(folder):
    (folder / "tokenizer.json").unlink()


def break_card_metadata(folder):
    (folder / "README.md").write_text("# A model card without metadata\n")


@pytest.mark.parametrize(
    "break_folder, message",
    [
        (break_by_removing_a_code_file, "remote-code file segmentation_head.py is missing"),
        (break_by_removing_a_code_file, "modeling_self1e.py imports .segmentation_head, but segmentation_head.py"),
        (break_auto_map, "auto_map['AutoModel'] = 'modeling_self1e.Self1EModel', but modeling_self1e.py defines no"),
        (break_processor_auto_map, "processor_config.json auto_map has no AutoProcessor"),
        (break_pipeline, "custom_pipelines['image-segmentation']['impl'] = 'pipeline_self1e.Missing', but"),
        (break_by_removing_a_shard, "{second}, listed in model.safetensors.index.json, is missing"),
        (break_index, "lm_head.weight is mapped to {first} but is not in it"),
        (break_by_editing_remote_code, "mask_losses.py differs from modeling/mask_losses.py"),
        (break_by_removing_the_tokenizer, "tokenizer.json is missing"),
        (break_card_metadata, "README.md metadata has no library_name: 'transformers' expected"),
    ],
)
def test_broken_folder_fails_naming_the_problem(
    exported, tmp_path, hub_api, monkeypatch, capsys, break_folder, message
):
    folder = broken_copy(exported, tmp_path)
    first, second = shard_names(folder)[:2]
    message = message.format(first=first, second=second)
    break_folder(folder)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    for extra in (["--dry-run"], []):
        assert hub_main(["push", str(folder), "--repo-id", "someone/self1e-tiny", *extra]) == 1
        error = capsys.readouterr().err
        assert "is not a complete SELF1E Hub folder" in error and message in error, error
    hub_api.create_repo.assert_not_called()
    hub_api.upload_folder.assert_not_called()


def test_problems_only_loading_reveals(exported, tmp_path, hub_api, capsys):
    # Consistent files whose weights do not fit the model and whose processor disagrees with the config.
    folder = broken_copy(exported, tmp_path)
    shard = folder / shard_names(folder)[0]
    tensors = load_file(shard)
    renamed = next(name for name in tensors if name.startswith("model.vision_tower."))
    tensors[renamed + "_renamed"] = tensors.pop(renamed)
    save_file(tensors, shard)
    edit_json(
        folder / "model.safetensors.index.json",
        lambda index: index["weight_map"].update({renamed + "_renamed": index["weight_map"].pop(renamed)}),
    )
    edit_json(folder / "config.json", lambda config: config.update(seg_token_id=3))
    for load in ("--full-load", "--meta-load"):
        assert hub_main(["push", str(folder), "--repo-id", "someone/self1e-tiny", "--dry-run", load]) == 1
        error = capsys.readouterr().err
        assert renamed in error and "config.seg_token_id=3 but the tokenizer's [SEG] is" in error, error
    hub_api.upload_folder.assert_not_called()


@pytest.fixture
def shipped_copy(tmp_path):
    """A copy of the shipped model folder, its remote code brought up to date with `modeling/`."""
    folder = tmp_path / "shipped"
    shutil.copytree(SHIPPED_MODEL, folder)
    sync_remote_code(folder)
    return folder


def fill_weight(folder, name: str, value: float) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors[name] = torch.full_like(tensors[name], value)
    save_file(tensors, path, metadata={"format": "pt"})


def test_nan_weights_fail_the_check_naming_the_folder_and_the_tensor(shipped_copy, hub_api, monkeypatch, capsys):
    name = "model.language_model.layers.0.mlp.down_proj.weight"
    fill_weight(shipped_copy, name, float("nan"))
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    for extra in (["--dry-run", "--full-load"], ["--dry-run", "--meta-load"], []):
        assert hub_main(["push", str(shipped_copy), "--repo-id", "someone/self1e-tiny", *extra]) == 1
        error = capsys.readouterr().err
        assert f"{shipped_copy} is not a complete SELF1E Hub folder" in error, error
        assert f"model.safetensors holds NaN or infinite values in {name}" in error, error
        forward_problem = "the forward pass on a test image gave non-finite logits and mask logits" in error
        assert forward_problem == ("--meta-load" not in extra), error
    hub_api.create_repo.assert_not_called()
    hub_api.upload_folder.assert_not_called()


def test_full_load_check_runs_a_forward_pass(shipped_copy, hub_api, capsys):
    # Finite weights whose forward pass overflows: only running the model reveals the problem.
    fill_weight(shipped_copy, "lm_head.weight", 3e38)
    assert hub_main(["push", str(shipped_copy), "--repo-id", "someone/self1e-tiny", "--dry-run", "--full-load"]) == 1
    error = capsys.readouterr().err
    assert "NaN or infinite values" not in error, error
    assert "the forward pass on a test image gave non-finite logits:" in error, error
    hub_api.upload_folder.assert_not_called()
