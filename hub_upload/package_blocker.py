"""Makes `transformers_self1e` unimportable in this interpreter, as on a machine with only torch and transformers, so
that a Hub folder is loaded from its remote code alone.

It imports nothing of the package: `load_check.py` imports it as a sibling module, and tests run its source in front
of their scripts (`python -c`).
"""

import sys

BLOCKED_PACKAGE = "transformers_self1e"


class BlockPackage:
    """Import finder under which `transformers_self1e` and its submodules cannot be imported."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == BLOCKED_PACKAGE:
            raise ImportError(f"{name} is blocked: a Hub folder must load without the {BLOCKED_PACKAGE} package")


def block_package() -> None:
    """Installs [`BlockPackage`] ahead of every other import finder."""
    sys.meta_path.insert(0, BlockPackage())
