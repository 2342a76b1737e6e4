"""The `rtd` command line as a user runs it: a subprocess, one line on stderr for bad input, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from rtdgan.service.cli import COMMANDS, EVAL_EXTRA, TRAIN_EXTRA, lacks_training_install
from tests.helpers import make_lookbook

ROOT = Path(__file__).resolve().parents[2]
# `rtd` as the service image has it: torch, training/ and models/ cannot be imported (a meta-path finder
# answers ModuleNotFoundError, as an absent package does), then rtdgan.service.cli.main runs on the arguments.
WITHOUT_TRAINING = """
import sys
BLOCKED = {"torch", "torchvision", "rtdgan.training", "rtdgan.models"}
def blocked(name):
    parts = name.split(".")
    return any(".".join(parts[:i]) in BLOCKED for i in range(1, len(parts) + 1))
class Block:
    def find_spec(self, name, path=None, target=None):
        if blocked(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
from rtdgan.service.cli import main
code = main(sys.argv[1:])
assert not any(blocked(name) for name in sys.modules), "a blocked module slipped in"
sys.exit(code)
"""


def rtd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtdgan.service.cli", *args], capture_output=True, text=True, timeout=120)


def rtd_without_training(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_TRAINING, *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


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


def test_help_imports_no_subcommand_module() -> None:
    """`rtd --help` lists the subcommands from the table alone; `rtd serve --help` imports only its own module."""
    probe = ("import sys\nfrom rtdgan.service import cli\ntry:\n    cli.main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print(sorted({c.module for c in cli.COMMANDS} & set(sys.modules)), sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('torch', 'faiss') or m.startswith(('rtdgan.training', 'rtdgan.models'))))")
    for args, modules in ((["--help"], "[]"), (["serve", "--help"], "['rtdgan.service.serve_cli']")):
        result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120,
                                cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == f"{modules} []", (args, result.stdout)


def test_version_is_the_package_version() -> None:
    result = rtd("--version")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert result.returncode == 0 and result.stdout.strip() == f"rtd {version}"


def test_every_table_entry_has_its_functions() -> None:
    """Each subcommand module exposes the add/run functions the table names (imported here, with torch)."""
    import importlib

    for command in COMMANDS:
        module = importlib.import_module(command.module)
        assert callable(getattr(module, command.add)) and callable(getattr(module, command.run)), command


@pytest.mark.parametrize("args", [("--help",), ("serve", "--help"), ("index", "build", "--help"),
                                  ("index", "search", "--help")])
def test_service_commands_run_without_training(args: tuple[str, ...]) -> None:
    """What the service image needs works where torch, training/ and models/ cannot be imported."""
    result = rtd_without_training(*args)
    assert result.returncode == 0, result.stderr
    assert "usage: rtd" in result.stdout and not result.stderr


@pytest.mark.parametrize("args", [("train", "--help"), ("export", "--data", "x"), ("eval",), ("demo", "--build-only"),
                                  ("data", "synth", "--out", "x")])
def test_training_commands_without_training_name_the_extra(args: tuple[str, ...]) -> None:
    result = rtd_without_training(*args)
    assert result.returncode == 2
    hint = EVAL_EXTRA if args[0] == "eval" else TRAIN_EXTRA  # eval's own extra needs no PyTorch
    assert result.stderr.count("\n") == 1 and hint in result.stderr, result.stderr
    assert result.stderr.startswith(f"rtd {args[0]}")
    assert "Traceback" not in result.stderr and not result.stdout


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


def test_a_missing_file_of_ours_is_a_bug_not_a_missing_extra() -> None:
    """The training package absent (the service image) or a training-only dependency: the extra's hint; a module
    missing inside our own packages is an internal error, never "install the extras"."""
    assert lacks_training_install("torch") and lacks_training_install("skimage.metrics")
    assert lacks_training_install("rtdgan.training") and lacks_training_install("rtdgan.models")
    assert not lacks_training_install("rtdgan.training.eval_protocol")
    assert not lacks_training_install("rtdgan.index") and not lacks_training_install("faiss")
