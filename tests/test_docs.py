"""Code cites the paper or docs/architecture.md, never a file outside the repository."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_code_cites_a_design_file_outside_the_repository() -> None:
    offenders = [str(p.relative_to(ROOT)) for folder in ("index", "models", "training", "service", "bench", "tests")
                 for p in (ROOT / folder).rglob("*.py") if p != Path(__file__) and "DESIGN.md" in p.read_text()]
    assert offenders == []
    assert (ROOT / "docs" / "architecture.md").is_file()
