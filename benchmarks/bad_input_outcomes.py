"""What the generated bad input of tests/test_fuzz.py got back, counted by entry point and outcome.

    python benchmarks/bad_input_outcomes.py            # the derandomized examples CI runs
    SELF1E_FUZZ_EXPLORE=1 python benchmarks/bad_input_outcomes.py   # ten times as many, drawn at random

Runs the property tests of tests/test_fuzz.py with `segment()`, the processor, the training collator and the command
line wrapped, and prints one row per outcome: a value returned (a command's exit code) or the exception raised. Only the
outermost call of a test counts (the processor called by `segment()` is not a second input). Exits with pytest's code.
"""

import collections
import functools
import sys
from pathlib import Path

import pytest
from common import table

import transformers_self1e.cli as cli
from transformers_self1e import Self1EForSegmentation, Self1EProcessor
from transformers_self1e.training import Self1EDataCollator

REPOSITORY = Path(__file__).resolve().parents[1]
outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
depth = 0


def counted(entry_point: str, function):
    """`function`, its outermost calls' outcomes counted under `entry_point`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        global depth
        depth += 1
        try:
            result = function(*args, **kwargs)
        except BaseException as error:
            if depth == 1:
                name = f"exit {error.code}" if isinstance(error, SystemExit) else type(error).__name__
                outcomes[entry_point][name] += 1
            raise
        finally:
            depth -= 1
        if depth == 0:
            outcomes[entry_point][f"exit {result}" if entry_point == "command line" else "returned"] += 1
        return result

    return wrapper


def main() -> int:
    Self1EForSegmentation.segment = counted("segment()", Self1EForSegmentation.segment)
    Self1EProcessor.prepare_segmentation_inputs = counted("processor", Self1EProcessor.prepare_segmentation_inputs)
    Self1EProcessor.__call__ = counted("processor", Self1EProcessor.__call__)
    Self1EDataCollator.__call__ = counted("collator", Self1EDataCollator.__call__)
    cli.main = counted("command line", cli.main)  # before pytest imports tests/test_fuzz.py, which imports it
    code = pytest.main(["-q", "-p", "no:cacheprovider", str(REPOSITORY / "tests" / "test_fuzz.py")])
    rows = [
        [entry_point, outcome, str(count)]
        for entry_point, counter in outcomes.items()
        for outcome, count in counter.most_common()
    ]
    rows.append(["all", "inputs", str(sum(sum(counter.values()) for counter in outcomes.values()))])
    print(table(["entry point", "outcome", "inputs"], rows))
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
