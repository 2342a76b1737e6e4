"""The artifact folder contract (docs/architecture.md): model.json plus generator.onnx and embedder.onnx. No torch.

One reader, used by `rtd index search`, `rtd eval` and the service: an artifact folder is usable only
when both ONNX files are there and match the sha256s that `rtd export` wrote into model.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from index.errors import UserError
from index.onnx import sha256_file


@dataclass(frozen=True)
class Artifacts:
    """An artifact folder whose files match its model.json."""

    folder: Path
    size: int  # S: the side of the square images both graphs take
    model: dict  # model.json as written by `rtd export`
    embedder_sha256: str  # of embedder.onnx: an index must have been built with the same file

    @property
    def embedder_name(self) -> str:
        return str(self.model["embedder"].get("backbone", "embedder"))


def read_model_json(artifacts: Path) -> dict | None:
    """ARTIFACTS/model.json, or None if there is none."""
    path = Path(artifacts) / "model.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e


def read_artifacts(folder: Path) -> Artifacts:
    """model.json plus both ONNX files, their sha256s checked; UserError naming what is wrong."""
    folder = Path(folder)
    model = read_model_json(folder)
    if model is None:
        raise UserError(f"not an artifacts folder (no model.json): {folder}; run `rtd export`")
    try:
        size = int(model["preprocessing"]["size"])
        wanted = {name: model[name]["onnx_sha256"] for name in ("generator", "embedder")}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{folder / 'model.json'}: missing or bad field {e}; re-run `rtd export`") from e
    for name, expected in wanted.items():
        path = folder / f"{name}.onnx"
        if not path.is_file():
            raise UserError(f"artifacts folder {folder} has no {path.name}")
        digest = sha256_file(path)
        if digest != expected:
            raise UserError(f"{path} does not match model.json (sha256 {digest[:12]} != {str(expected)[:12]}): "
                            f"a partial copy or a file from another export")
    return Artifacts(folder, size, model, wanted["embedder"])
