"""`push`: check a SELF1E Hub folder, then create the repository and upload the folder with `huggingface_hub`."""

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token

from .folder_check import FolderReport, check_hub_folder
from .hub_layout import IGNORE_PATTERNS

DEFAULT_COMMIT_MESSAGE = "Upload SELF1E model"


@dataclass(frozen=True)
class PushResult:
    """What was (or, in a dry run, would be) uploaded, and where."""

    repo_id: str
    revision: str | None
    report: FolderReport
    commit_url: str | None = None


def push_hub_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
    full_load: bool | None = None,
) -> PushResult:
    """Checks `folder` (see `check_hub_folder`) and uploads it to the model repository `repo_id`.

    Args:
        private: create the repository as private (an existing repository keeps its visibility).
        revision: branch to upload to, created from `main` if missing; `None` is `main`.
        token: Hub token; defaults to `HF_TOKEN` or the one saved by `hf auth login`.
        dry_run: stop after the checks; nothing leaves the machine and no token is needed.
        full_load: how the check loads the model (default: fully when small, on the meta device otherwise).

    Raises:
        FolderCheckError: the folder would not load from the Hub; nothing was uploaded.
        ValueError: no token was found.
    """
    folder = Path(folder)
    if not dry_run:
        token = token or get_token()
        if not token:
            raise ValueError("no Hugging Face token: pass --token, set HF_TOKEN or run `hf auth login`")
    report = check_hub_folder(folder, full_load)
    if dry_run:
        return PushResult(repo_id, revision, report)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private or None, repo_type="model", exist_ok=True)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        revision=revision,
        commit_message=commit_message or DEFAULT_COMMIT_MESSAGE,
        ignore_patterns=IGNORE_PATTERNS,
    )
    return PushResult(repo_id, revision, report, commit.commit_url)


__all__ = ["PushResult", "push_hub_folder"]
