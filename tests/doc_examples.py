"""Run the python examples of a docs page as written: each ```python block, in order, in one
module of its own (registered in sys.modules, so jobs it defines resolve by import path)."""

from __future__ import annotations

import re
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@contextmanager
def example_module(name: str) -> Iterator[types.ModuleType]:
    """A fresh module `name` in sys.modules for the examples' code, removed on exit."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        yield module
    finally:
        del sys.modules[name]


def run(block: str, module: types.ModuleType, origin: str) -> None:
    exec(compile(block, f"{origin}:example", "exec"), module.__dict__)  # noqa: S102
