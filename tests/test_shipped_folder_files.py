"""The shipped model folder is made of real files: its remote code is `modeling/` byte for byte, the repository has
no symbolic links, and every ordinary way of copying or uploading the folder gives one that loads with
`trust_remote_code=True` alone."""

import shutil
import subprocess
import zipfile
from pathlib import Path
from unittest import mock

import PIL.Image
import pytest
import torch
from helpers.remote_code import run_without_package
from huggingface_hub import HfApi

from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.demo import DEMO_EXAMPLES, SHIPPED_MODEL, load_demo_examples
from transformers_self1e.hub_upload.hub_layout import IGNORE_PATTERNS, MODELING_DIR

REPOSITORY = Path(__file__).resolve().parents[1]
REFRESH_COMMAND = "make shipped-code"


def test_shipped_remote_code_is_the_modeling_directory():
    expected = {path.name: path.read_bytes() for path in MODELING_DIR.glob("*.py")}
    shipped = {path.name: path.read_bytes() for path in SHIPPED_MODEL.glob("*.py")}
    stale = sorted(name for name in expected.keys() & shipped.keys() if expected[name] != shipped[name])
    missing, extra = sorted(expected.keys() - shipped.keys()), sorted(shipped.keys() - expected.keys())
    assert not (stale or missing or extra), (
        f"the shipped model's remote code is not modeling/ (differs: {stale}, missing: {missing}, not in modeling/: "
        f"{extra}); run `{REFRESH_COMMAND}`"
    )


def test_repository_has_no_symbolic_links():
    if not (REPOSITORY / ".git").exists():
        pytest.skip("not a git checkout")
    # Tracked files and new files git does not ignore, as they are in the working tree now.
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
    ).stdout.decode()
    links = [name for name in listed.split("\0") if name and (REPOSITORY / name).is_symlink()]
    assert not links, f"symbolic links in the repository: {links}"


def copy_with_cp(folder: Path, destination: Path) -> None:
    subprocess.run(["cp", "-r", str(folder), str(destination)], check=True)


def copy_through_zip(folder: Path, destination: Path) -> None:
    archive = shutil.make_archive(str(destination.with_name("archive")), "zip", root_dir=folder)
    with zipfile.ZipFile(archive) as opened:
        opened.extractall(destination)


def copy_what_upload_folder_sends(folder: Path, destination: Path) -> None:
    """Writes the files `HfApi.upload_folder` would commit when `push` uploads `folder` (its own listing and
    filtering, stopped before anything leaves the machine)."""

    class Listed(Exception):
        pass

    list_additions = HfApi._prepare_upload_folder_additions
    sent = {}

    def capture_additions(api, *args, **kwargs):
        sent.update({add.path_in_repo: Path(add.path_or_fileobj) for add in list_additions(api, *args, **kwargs)})
        raise Listed

    with (
        mock.patch.object(HfApi, "_prepare_upload_folder_additions", capture_additions),
        mock.patch.object(HfApi, "_validate_yaml"),  # a request to the Hub
        pytest.raises(Listed),
    ):
        HfApi(token=False).upload_folder(repo_id="org/self1e-8b", folder_path=folder, ignore_patterns=IGNORE_PATTERNS)
    assert "config.json" in sent and "modeling_self1e.py" in sent
    for name, path in sent.items():
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination / name)


COPIES = {
    "cp-r": copy_with_cp,
    "copytree": shutil.copytree,
    "zip": copy_through_zip,
    "upload-folder": copy_what_upload_folder_sends,
}


def test_copies_of_the_shipped_folder_load_with_remote_code_alone(tmp_path):
    example = next(example for example in load_demo_examples() if example.prompt == "the circle")
    image_path = DEMO_EXAMPLES / example.image
    model = Self1EForSegmentation.from_pretrained(SHIPPED_MODEL).eval()
    processor = Self1EProcessor.from_pretrained(SHIPPED_MODEL)
    expected = model.segment(PIL.Image.open(image_path), example.prompt, processor=processor).masks
    assert 0 < expected.float().mean() < 1
    folders = {}
    for name, copy in COPIES.items():
        folders[name] = tmp_path / name / "self1e"
        folders[name].parent.mkdir()
        copy(SHIPPED_MODEL, folders[name])
    folder_paths = {name: str(folder) for name, folder in folders.items()}
    script = f"""
        import PIL.Image
        import torch
        from transformers import AutoModel

        masks = {{}}
        for name, folder in {folder_paths!r}.items():
            model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
            masks[name] = model.segment(PIL.Image.open({str(image_path)!r}), {example.prompt!r}).masks
        torch.save(masks, {str(tmp_path / "masks.pt")!r})
        """
    result = run_without_package(script, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    masks = torch.load(tmp_path / "masks.pt")
    assert masks.keys() == COPIES.keys()
    for name, mask in masks.items():
        assert torch.equal(mask, expected), name
