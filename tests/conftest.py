"""Fixtures shared by every test package."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_lookbook


@pytest.fixture
def lookbook(tmp_path: Path) -> Path:
    """A 10-product, 3-photos-each LookBook folder of random pictures at 32 px."""
    return make_lookbook(tmp_path / "lookbook")
