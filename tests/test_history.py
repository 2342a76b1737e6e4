"""The product speaks of itself, not of its making: no tracked text file (code, comments, printed text, configs,
Dockerfiles, tests, committed JSON, docs) refers to the development's own bookkeeping, such as a numbered work
session, a tracker's issue number or what a lost build machine did. Such words mean nothing to a reader of the
product; git history and CHANGELOG.md keep what changed and when."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIPPED = {"CHANGELOG.md", "tests/test_history.py"}  # the changelog is where history belongs; this file names it

# Each pattern names a piece of development history, with a number or a fixed phrase, so that ordinary words
# ("issues a 503", "an onnxruntime session", "in turn") never match.
PATTERNS = [re.compile(p) for p in (
    r"\b[Ss]essions? \d+",  # a numbered work session, or several
    r"\b[Ii]ssues? #?\d+",  # a tracker's issue by its number, with or without "#"
    r"\b[Ii]ssues? #",  # "issues #..., #..."
    r"\bthe issue\s+asks\b",
    r"\b[Tt]he issue's\b",  # "the setting", "the reproduction"
    r"\bhardening issue\b",
    r"\blost with (?:its|that|the|this) machine\b",
    r"\b(?:[Bb]efore|[Aa]fter|[Ss]ince|[Uu]ntil) #\d+",
    r"\b[Tt]urn \d+\b",  # a numbered conversation turn
)]


def tracked_text_files() -> list[Path]:
    """Every tracked file that is text (no NUL byte, UTF-8), but the skipped ones."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    files = []
    for name in names.decode().split("\0"):
        path = ROOT / name
        if not name or name in SKIPPED or not path.is_file():
            continue
        files.append(path)
    return files


def history_lines(path: Path) -> list[str]:
    """`file:line: text` for each line of `path` with a history phrase (none for a binary file)."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return []
    return [f"{path.relative_to(ROOT)}:{n}: {line.strip()[:160]}"
            for n, line in enumerate(text.splitlines(), 1) if any(p.search(line) for p in PATTERNS)]


def test_the_patterns_find_history_and_not_ordinary_words() -> None:
    # Written with "_" for the space they test, so that this file itself holds none of the phrases.
    history = [h.replace("_", " ") for h in (
        "before session_9, every run did", "Session_10 measured", "(issue_#13, street framing)",
        "issue_16's check", "issues_#13 and #16", "as the_issue asks", "the issue's setting",
        "(hardening issue, defect 8)", "its generator was lost with that machine",
        "after #12", "since #7", "in turn 3")]
    ordinary = ["a full queue issues a 503", "one onnxruntime InferenceSession per graph", "session-scoped fixture",
                "each server in turn, one request at a time", "the session's shared test world", "turn \"\" into None",
                "RTD_MILVUS_CONSISTENCY=Session", "a known issue of onnxruntime", "colour #3a7bd5"]
    assert [h for h in history if not any(p.search(h) for p in PATTERNS)] == []
    assert [o for o in ordinary if any(p.search(o) for p in PATTERNS)] == []


def test_no_tracked_text_file_speaks_of_the_development_history() -> None:
    found = [hit for path in tracked_text_files() for hit in history_lines(path)]
    assert not found, "development history in the product (say what the code does, or cite the paper):\n" + \
        "\n".join(found)
