"""The card beside each committed weights file (models/pretrained/*.json): the file's sha256, the recipe that made
it (training/demo_config.py) and what was measured, and the command that reproduces it. The generator, the person
crop and the retrieval head each have one; a weights file is used only when its card matches it and the recipe."""

from __future__ import annotations

import json
from pathlib import Path

from rtdgan.index.files import sha256_file, write_atomic


def card_path(weights: Path) -> Path:
    """Where the card of a weights file is: beside it, with the suffix .json."""
    return weights.with_suffix(".json")


def read_card(weights: Path) -> dict:
    """The card of a weights file."""
    return json.loads(card_path(weights).read_text())


def card_problem(weights: Path | None, recipe: dict, made: str = "fitted") -> str | None:
    """Why a committed weights file is not used (None: it is): "absent" (no file or no card), a file that does not
    match its card's sha256, or a card of another recipe (`made`, "trained" or "fitted", words the message)."""
    if weights is None or not weights.is_file() or not card_path(weights).is_file():
        return "absent"
    card = read_card(weights)
    if card.get("sha256") != sha256_file(weights):
        return f"{weights} does not match its card (sha256)"
    if card.get("recipe") != recipe:
        return f"{weights} was {made} with another recipe"
    return None


def _save(weights: Path, card: dict) -> None:
    write_atomic(card_path(weights), (json.dumps(card, indent=1) + "\n").encode())


def write_card(weights: Path, fields: dict, reproduce: str) -> dict:
    """Write the card of a weights file just saved: its sha256, then `fields` (the recipe, what was measured), then
    the command that reproduces it; returns the card."""
    card = {"sha256": sha256_file(weights)} | fields | {"reproduce": reproduce}
    _save(weights, card)
    return card


def record_check(weights: Path, check_json: Path) -> None:
    """Add what the demo's check measured with these weights (its check.json) to their card."""
    card = read_card(weights)
    card["check"] = json.loads(check_json.read_text())
    _save(weights, card)
