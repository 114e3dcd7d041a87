"""Types reach users: pyright (basic, as `make lint` runs it) on a sample user module.

tests/typing/sample_jobs.py must check clean, with `assert_type` pinning what jobkit promises;
tests/typing/typos.py holds mistakes, each line marked `# error` must be reported, and no
other line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobkit import testing

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "typing"


def pyright(path: Path) -> list[dict]:
    """pyright's diagnostics for one file, with the project's settings (pyproject.toml)."""
    done = subprocess.run([sys.executable, "-m", "pyright", "--outputjson", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"pyright did not run:\n{done.stdout}\n{done.stderr}")
    return report["generalDiagnostics"]


def test_the_sample_user_module_type_checks() -> None:
    problems = [f"{d['range']['start']['line'] + 1}: {d['message']}"
                for d in pyright(SAMPLES / "sample_jobs.py") if d["severity"] != "information"]
    assert problems == []


def test_typos_in_arguments_options_and_assertions_are_caught() -> None:
    source = (SAMPLES / "typos.py").read_text().splitlines()
    expected = {n for n, line in enumerate(source, 1) if "  # error: " in line}
    reported = {d["range"]["start"]["line"] + 1 for d in pyright(SAMPLES / "typos.py")
                if d["severity"] == "error"}
    assert len(expected) >= 10
    assert reported == expected


def test_the_sample_module_runs_as_written() -> None:
    from tests.typing import sample_jobs

    with testing.fake():
        sample_jobs.enqueue_things()
        assert len(sample_jobs.ImportJob.jobs) == 9  # five enqueues and two bulks of two
    sample_jobs.in_a_test()
