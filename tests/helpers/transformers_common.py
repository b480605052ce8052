"""transformers' own common model and configuration tests, from the source distribution of the installed version.

The sdist on PyPI ships `tests/test_modeling_common.py` and `tests/test_configuration_common.py` but not three modules
they import (`tests/exporters/test_export.py`, `tests/generation/test_utils.py`, `tests/utils/
test_configuration_utils.py`); `write_stand_ins` writes minimal ones, so the export and generation suites are not run
from here (SELF1E's `generate()` has its own tests). The sdist is downloaded once with pip and cached outside the
repository (`$SELF1E_TRANSFORMERS_TESTS_CACHE`, by default `~/.cache/transformers-self1e`); a failed download is an
error, not a skip.
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
COMMON_FILES = ("test_modeling_common.py", "test_configuration_common.py")

STAND_INS = {
    "exporters/test_export.py": '''"""Stand-in: transformers' export tests are not in its sdist, so none are run."""


class ExportTesterMixin:
    pass
''',
    "generation/test_utils.py": '''"""Stand-in: transformers' generation tests are not in its sdist, so none are run."""


class GenerationTesterMixin:
    pass
''',
    "utils/test_configuration_utils.py": '''"""Stand-in: `ConfigTester.check_config_arguments_init` reads this only for configs without sub-configs."""

config_common_kwargs = {}
''',
}


def cache_root() -> Path:
    default = Path.home() / ".cache" / "transformers-self1e"
    return Path(os.environ.get("SELF1E_TRANSFORMERS_TESTS_CACHE", default))


def fetch_common_tests(version: str = transformers.__version__) -> Path:
    """The folder holding the importable package `transformers_common_tests` for `version`, fetched if needed."""
    root = cache_root() / f"transformers-{version}-tests"
    package = root / PACKAGE
    if all((package / name).is_file() for name in COMMON_FILES):
        return root
    with tempfile.TemporaryDirectory() as download:
        command = [sys.executable, "-m", "pip", "download", f"transformers=={version}", "--no-deps"]
        command += ["--no-binary", ":all:", "--no-build-isolation", "-d", download]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        archives = list(Path(download).glob("transformers-*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(f"could not download the transformers {version} sdist:\n{result.stderr[-2000:]}")
        package.mkdir(parents=True, exist_ok=True)
        _extract_common_files(archives[0], version, package)
    write_stand_ins(package)
    return root


def _extract_common_files(archive: Path, version: str, package: Path) -> None:
    with tarfile.open(archive) as sdist:
        for name in COMMON_FILES:
            member = sdist.extractfile(f"transformers-{version}/tests/{name}")
            if member is None:
                raise RuntimeError(f"the transformers {version} sdist has no tests/{name}")
            (package / name).write_bytes(member.read())


def write_stand_ins(package: Path) -> None:
    (package / "__init__.py").write_text("")
    for relative, text in STAND_INS.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").write_text("")
        path.write_text(text)


def import_common_tests():
    """`(ModelTesterMixin, ConfigTester)` of the installed transformers."""
    root = str(fetch_common_tests())
    if root not in sys.path:
        sys.path.insert(0, root)
    modeling = importlib.import_module(f"{PACKAGE}.test_modeling_common")
    configuration = importlib.import_module(f"{PACKAGE}.test_configuration_common")
    return modeling.ModelTesterMixin, configuration.ConfigTester
