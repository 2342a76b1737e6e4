"""Neither onnxruntime build installed (the base install without the `cpu` or `gpu` extra): one line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rtdgan.service.cli import RUNTIME_EXTRA

ROOT = Path(__file__).resolve().parents[2]
NO_RUNTIME = "import sys; sys.modules['onnxruntime'] = None; from rtdgan.service.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize("argv", [["serve", "--artifacts", "a", "--index", "i"],
                                  ["index", "build", "--artifacts", "a", "--catalog", "c", "--out", "o"],
                                  ["index", "search", "--artifacts", "a", "--index", "i", "--image", "x.jpg"]])
def test_a_missing_onnxruntime_is_one_line_naming_both_extras(argv: list[str]) -> None:
    result = subprocess.run([sys.executable, "-c", NO_RUNTIME, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"rtd {' '.join(argv[:2] if argv[0] == 'index' else argv[:1])}: error: ")
    assert "no onnxruntime is installed" in result.stderr and RUNTIME_EXTRA in result.stderr
