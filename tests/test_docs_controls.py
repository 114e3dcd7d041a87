"""docs/controls.md's examples run as written (in fake mode: the classes are defined in a
module of their own, so the recorded jobs can be performed by their import path)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from jobkit import testing

DOC = Path(__file__).resolve().parent.parent / "docs" / "controls.md"


def test_every_python_example_in_controls_md_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 5
    module = types.ModuleType("docs_controls_example")
    sys.modules[module.__name__] = module
    try:
        with testing.fake():
            for block in blocks:
                exec(compile(block, f"{DOC}:example", "exec"), module.__dict__)  # noqa: S102
            # the unique and debounce examples' duplicates (the last example has its own mode)
            assert [s.reason for s in testing.skipped()] == ["unique", "debounced",
                                                             "debounced"]
    finally:
        del sys.modules[module.__name__]
