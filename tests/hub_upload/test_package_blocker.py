"""The blocker that the load check and the remote-code tests run under: `transformers_self1e` cannot be imported,
everything else can."""

from helpers.remote_code import run_without_package


def test_the_package_and_its_modules_are_blocked_and_nothing_else(tmp_path):
    script = """
        import importlib

        for name in ("transformers_self1e", "transformers_self1e.modeling.mask_postprocessing"):
            try:
                importlib.import_module(name)
            except ImportError as error:
                print(f"blocked: {error}")
        import torch
        import transformers

        print("others import")
        """
    result = run_without_package(script, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "blocked: transformers_self1e is blocked: a Hub folder must load without the transformers_self1e package",
        "blocked: transformers_self1e is blocked: a Hub folder must load without the transformers_self1e package",
        "others import",
    ]
