"""Flags derived from a frozen dataclass: defaults written once, shown in --help, a config file read back."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from rtdgan.index.configs import add_arguments, from_args, opt, to_json_dict
from rtdgan.index.errors import UserError


@dataclass(frozen=True)
class Job:
    data: Path = opt(help="input folder")
    model: Literal["a", "b"] = opt("a", "which model")
    batch_sizes: tuple[int, ...] = opt((4, 2), "per stage")
    lr: float = opt(2e-4, "learning rate")
    threads: int | None = opt(None, "CPU threads")
    resume: bool = opt(False, "continue the run")
    internal: int = opt(7, cli=False)


def parse(argv: list[str]) -> Job:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Job)
    return from_args(Job, parser.parse_args(argv))


def test_defaults_come_from_the_dataclass_and_flags_override() -> None:
    assert parse(["--data", "d"]) == Job(data=Path("d"))
    job = parse(["--data", "d", "--model", "b", "--batch-sizes", "8,4,2", "--lr", "1e-3", "--threads", "2", "--resume"])
    assert job == Job(Path("d"), "b", (8, 4, 2), 1e-3, 2, True)


def test_help_shows_each_default_and_hides_program_fields() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Job)
    text = parser.format_help()
    assert "default: 0.0002" in text and "default: 4,2" in text and "required" in text
    assert "--internal" not in text


def test_missing_required_and_bad_choice() -> None:
    with pytest.raises(UserError, match="missing --data"):
        parse([])
    with pytest.raises(SystemExit):
        parse(["--data", "d", "--model", "c"])


def test_config_file_round_trip_with_flags_on_top(tmp_path: Path) -> None:
    job = Job(Path("d"), "b", (8, 4), 1e-3, None, True)
    (tmp_path / "config.json").write_text(json.dumps(to_json_dict(job)))
    assert parse(["--config", str(tmp_path / "config.json")]) == job
    assert parse(["--config", str(tmp_path / "config.json"), "--lr", "0.5"]).lr == 0.5
    (tmp_path / "c.toml").write_text('data = "x"\nbatch_sizes = [1, 2]\n')
    assert parse(["--config", str(tmp_path / "c.toml")]) == Job(Path("x"), batch_sizes=(1, 2))
    (tmp_path / "bad.json").write_text('{"data": "x", "nope": 1}')
    with pytest.raises(UserError, match="unknown field.*nope"):
        parse(["--config", str(tmp_path / "bad.json")])
