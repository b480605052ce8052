"""The README runs as written, and the documents name only paths that exist.

Convention: a fenced ```python or ```bash block of README.md is runnable when the line just before its opening fence
is exactly `<!-- runnable -->` (an HTML comment, invisible on the rendered page). Each runnable python block runs in a
fresh interpreter, each runnable bash block through `bash -e -o pipefail` with this environment's bin directory first
on PATH (so `self1e` is this checkout's console script), offline. Both run from a scratch directory whose top-level
entries link to the repository's, so the README's relative paths resolve as for a user at the repository root while
everything a block writes (under `outputs/`) lands in the scratch directory, not in the checkout.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUNNABLE_MARKER = "<!-- runnable -->"
RUNNABLE_LANGUAGES = ("python", "bash")
DOCUMENTS = [README, REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Repository paths written out in the documents, relative to the repository root.
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:src|examples|benchmarks|docs|modeling|hub_upload|tests)/(?:[\w./*-]*[\w/*])?)"
)
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
BLOCK_TIMEOUT_S = 600


@dataclass(frozen=True)
class FencedBlock:
    language: str
    code: str
    line: int  # of the opening fence, 1-based
    runnable: bool

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.code.splitlines() if line.strip()), "")


def fenced_blocks(text: str) -> list[FencedBlock]:
    """The fenced code blocks of a markdown text, each with the language of its opening fence."""
    lines = text.splitlines()
    blocks, index = [], 0
    while index < len(lines):
        if not lines[index].startswith("```"):
            index += 1
            continue
        start = index
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("```")), None)
        if end is None:
            raise ValueError(f"README.md line {start + 1}: the fenced block is never closed")
        runnable = start > 0 and lines[start - 1].strip() == RUNNABLE_MARKER
        code = "\n".join(lines[start + 1 : end]) + "\n"
        blocks.append(FencedBlock(lines[start][3:].strip(), code, start + 1, runnable))
        index = end + 1
    return blocks


RUNNABLE_BLOCKS = [block for block in fenced_blocks(README.read_text()) if block.runnable]


def block_id(block: FencedBlock) -> str:
    return f"{block.language}:line{block.line}:{block.first_line[:50]}"


@pytest.fixture(scope="module")
def user_root(tmp_path_factory) -> Path:
    """A scratch directory that looks like the repository root, except that `outputs/` is its own."""
    root = tmp_path_factory.mktemp("readme-user-root")
    for entry in REPO.iterdir():
        if entry.name not in {".git", "outputs"}:
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    return root


def test_readme_has_runnable_python_and_bash_blocks():
    languages = {block.language for block in RUNNABLE_BLOCKS}
    assert set(RUNNABLE_LANGUAGES) <= languages, f"runnable blocks only in {sorted(languages)}"


def test_every_runnable_marker_precedes_a_python_or_bash_block():
    lines = README.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        if line.strip() != RUNNABLE_MARKER:
            continue
        following = lines[number] if number < len(lines) else ""
        assert following in {f"```{language}" for language in RUNNABLE_LANGUAGES}, (
            f"README.md line {number}: {RUNNABLE_MARKER} must be followed by a ```python or ```bash fence, "
            f"not {following!r}"
        )


@pytest.mark.slow
@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=block_id)
def test_runnable_block_succeeds(block: FencedBlock, user_root: Path):
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(user_root / "hf_home"),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    interpreter = [sys.executable] if block.language == "python" else ["bash", "-e", "-o", "pipefail"]
    result = subprocess.run(
        [*interpreter, "-c", block.code],
        cwd=user_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    where = f"README.md line {block.line} ({block.language} block starting {block.first_line!r})"
    assert result.returncode == 0, f"{where} exited with {result.returncode}:\n{output[-4000:]}"
    assert "Traceback" not in output, f"{where} printed a traceback:\n{output[-4000:]}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_paths_named_in_the_document_exist(document: Path):
    text = document.read_text()
    named = set(REPO_PATH.findall(text))
    assert document != README or named, "README.md names no repository path: the pattern is broken"
    missing = sorted(path for path in named if not any(REPO.glob(path.rstrip("/"))))
    assert not missing, f"{document.relative_to(REPO)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_relative_links_in_the_document_resolve(document: Path):
    broken = []
    for target in MARKDOWN_LINK.findall(document.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked.read_text()):
            broken.append(target)
    assert not broken, f"{document.relative_to(REPO)} links to what does not exist: {broken}"


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces as hyphens."""
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # a `# comment` in code is no heading
    headings = re.findall(r"^#+\s+(.+?)\s*$", prose, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}
