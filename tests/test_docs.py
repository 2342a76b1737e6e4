"""The docs stay true to the code: links resolve, every setting is listed with its default, every file is named.

Code cites the paper or docs/architecture.md, never a file outside the repository; docs/deployment.md lists
every `RTD_*` setting of service/settings.py with its default; docs/architecture.md has a line for every
module; the README stays a five-minute read.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from rtdgan.service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
# RTD_* names in the code that are not settings a user sets: a crash-point hook of the atomic-save tests, and the
# placeholder of serve_cli's help text.
NOT_SETTINGS = {"RTD_CATALOG_CRASH_AT", "RTD_FIELD"}


def test_no_code_cites_a_design_file_outside_the_repository() -> None:
    offenders = [str(p.relative_to(ROOT)) for folder in ("index", "models", "training", "service", "bench", "tests")
                 for p in (ROOT / folder).rglob("*.py") if p != Path(__file__) and "DESIGN.md" in p.read_text()]
    assert offenders == []
    assert (ROOT / "docs" / "architecture.md").is_file()


def test_the_readme_is_a_five_minute_read() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES
    headings = [line[3:] for line in lines if line.startswith("## ")]
    order = ["Quick start", "Call the API", "Deploy", "Evaluate", "Train", "Results", "Commands", "Layout",
             "Development", "Citation"]
    found = [next((i for i, h in enumerate(headings) if h.startswith(name)), None) for name in order]
    assert None not in found, dict(zip(order, found, strict=True))
    assert found == sorted(found)


MARKDOWN = sorted(ROOT / name for name in subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True,
                                                         text=True, check=True).stdout.split())


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    """Every relative link of a markdown file names a file or folder of the checkout (anchors aside)."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)  # links inside code blocks are examples
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            broken.append(target)
    assert broken == []


def shown_default(value: object) -> str:
    """A setting's default as docs/deployment.md writes it: `unset` for None, `empty` for "" and []."""
    if value is None:
        return "unset"
    if value == "" or value == []:
        return "empty"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def documented_settings() -> dict[str, str]:
    """docs/deployment.md's settings table: variable -> the first code span of its default column."""
    rows = {}
    for line in (ROOT / "docs" / "deployment.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`RTD_[A-Z0-9_]+`", cells[0]):
            default = re.search(r"`([^`]*)`", cells[1])
            rows.setdefault(cells[0].strip("`"), default.group(1) if default else cells[1])
    return rows


def test_deployment_lists_every_setting_with_its_default() -> None:
    documented = documented_settings()
    expected = {}
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory is not None else field.default
        expected[f"RTD_{name.upper()}"] = shown_default(default)
    missing = sorted(set(expected) - set(documented))
    wrong = {name: (documented[name], value) for name, value in expected.items()
             if name in documented and documented[name] != value}
    assert missing == [], f"docs/deployment.md lacks these settings: {missing}"
    assert wrong == {}, f"docs/deployment.md shows these defaults wrong (shown, actual): {wrong}"


def test_deployment_names_every_rtd_variable_the_code_reads() -> None:
    tracked = subprocess.run(["git", "ls-files", "index", "service", "training", "docker", "docker-compose.yml"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    names = set()
    for path in tracked:
        if path.endswith((".py", ".yml", "Dockerfile")):
            names |= set(re.findall(r"\bRTD_[A-Z0-9_]*[A-Z0-9]\b", (ROOT / path).read_text()))
    text = (ROOT / "docs" / "deployment.md").read_text()
    assert sorted(n for n in names - NOT_SETTINGS if f"`{n}`" not in text) == []


def test_architecture_names_every_module() -> None:
    """docs/architecture.md's file table has a line for every tracked Python file of the packages and bench/."""
    tracked = subprocess.run(["git", "ls-files", "index", "models", "training", "service", "bench"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`([\w./-]+)`", text))
    folders = {p for p in named if p.endswith("/")}

    def covered(path: str) -> bool:
        return (path in named or Path(path).name == "__init__.py"
                or any(path.startswith(f) and f.count("/") > 1 for f in folders))  # a sub-folder's own line
    assert sorted(p for p in tracked if p.endswith(".py") and not covered(p)) == []
