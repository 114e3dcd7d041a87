"""docs/controls.md's examples run as written (in fake mode: the classes are defined in a
module of their own, so the recorded jobs can be performed by their import path)."""

from __future__ import annotations

from jobkit import testing
from tests.doc_examples import DOCS, example_module, python_blocks, run

DOC = DOCS / "controls.md"


def test_every_python_example_in_controls_md_runs() -> None:
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) == 5
    with example_module("docs_controls_example") as module, testing.fake():
        for block in blocks:
            run(block, module, str(DOC))
        # the unique and debounce examples' duplicates (the last example has its own mode)
        assert [s.reason for s in testing.skipped()] == ["unique", "debounced", "debounced"]
