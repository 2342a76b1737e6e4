"""The `rtd` command line as a user runs it: a subprocess, one line on stderr for bad input, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_lookbook


def rtd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip() and "config {" not in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_every_subcommand() -> None:
    result = rtd("--help")
    assert result.returncode == 0
    for name in ("data", "train", "eval", "export", "index", "serve", "demo"):
        assert name in result.stdout


@pytest.mark.parametrize("args", [
    ("data", "split", "--data"),                      # flag without its value
    ("data", "split", "--bogus", "x"),                 # unknown flag
    ("data", "synth", "--out", "x", "--products", "0"),  # not a positive integer
    ("nosuchcommand",),
])
def test_bad_flags_are_one_line(args: tuple[str, ...]) -> None:
    assert_one_line_error(rtd(*args))


def test_data_split_bad_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("x")
    for folder in ("missing", "empty", "text"):
        result = rtd("data", "split", "--data", str(tmp_path / folder), "--out", str(tmp_path / "s.json"))
        assert_one_line_error(result)
        assert str(tmp_path / folder) in result.stderr
    assert not (tmp_path / "s.json").exists()


def test_data_split_reports_corrupt_jpeg_and_succeeds(tmp_path: Path) -> None:
    data = make_lookbook(tmp_path / "d", products=12, photos=2)
    bad = sorted(data.glob("*_CLEAN0_*"))[3]
    bad.write_bytes(bad.read_bytes()[:50])
    result = rtd("data", "split", "--data", str(data), "--out", str(tmp_path / "s.json"), "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert bad.name in result.stderr and "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["skipped"] == 1 and summary["counts"]["test"]["products"] == 1


def test_serve_with_missing_folders_is_one_line(tmp_path: Path) -> None:
    result = rtd("serve", "--artifacts", str(tmp_path / "nope"), "--index", str(tmp_path / "nope2"))
    assert_one_line_error(result)
