"""The artifact folder contract (docs/architecture.md): model.json plus generator.onnx and embedder.onnx. No torch.

One reader, used by `rtd index search`, `rtd eval` and the service: an artifact folder is usable only
when both ONNX files are there and match the sha256s that `rtd export` wrote into model.json.

Two layouts are read (`resolve_artifacts`):
  - versioned, as `rtd export` writes it: ARTIFACTS/v-000007/{generator.onnx, embedder.onnx, model.json},
    the previous version or two beside it, and ARTIFACTS/model.json, the pointer: a copy of the current
    version's model.json plus `"current": "v-000007"`, replaced atomically last. ARTIFACTS itself is never
    renamed, so it can be a mount point (docker-compose's `export` job), and a reader that follows the
    pointer sees one whole version;
  - flat (older exports, hand-made test folders): model.json and both ONNX files in ARTIFACTS itself.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from rtdgan.index.errors import UserError
from rtdgan.index.files import sha256_file

MODEL_JSON = "model.json"
POINTER_KEY = "current"  # ARTIFACTS/model.json's key naming the version folder that holds the files
VERSION_DIR = re.compile(r"^v-(\d{6,})$")  # v-000001, v-000002, ... (training/export.py writes them)


@dataclass(frozen=True)
class Artifacts:
    """An artifact folder whose files match its model.json."""

    folder: Path  # where the files are: the current version folder (or the folder itself, flat layout)
    size: int  # S: the side of the square images both graphs take
    model: dict  # model.json as written by `rtd export`
    embedder_sha256: str  # of embedder.onnx: an index must have been built with the same file

    @property
    def embedder_name(self) -> str:
        return str(self.model["embedder"].get("backbone", "embedder"))


def _load_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a JSON object")
    return doc


def _pointed(folder: Path, doc: dict) -> Path | None:
    """The version folder a pointer model.json names, or None for a flat folder's model.json."""
    name = doc.get(POINTER_KEY)
    if name is None:
        return None
    if not isinstance(name, str) or not VERSION_DIR.match(name):
        raise UserError(f"{folder / MODEL_JSON}: bad {POINTER_KEY!r} {name!r} (expected a v-NNNNNN folder name)")
    return folder / name


def current_artifacts(folder: Path) -> tuple[Path, dict] | None:
    """(the folder holding the files, its model.json), the pointer read once; None when there is no model.json."""
    folder = Path(folder)
    doc = _load_json(folder / MODEL_JSON)
    if doc is None:
        return None
    version = _pointed(folder, doc)
    if version is None:
        return folder, doc
    current = _load_json(version / MODEL_JSON)
    if current is None:
        raise UserError(f"{folder / MODEL_JSON} points at {version.name}, which has no {MODEL_JSON}; "
                        f"re-run `rtd export`")
    return version, current


def resolve_artifacts(folder: Path) -> Path:
    """The folder that holds the files: ARTIFACTS/<current version>, or ARTIFACTS itself (flat layout, or no
    model.json at all: the caller decides whether that is an error)."""
    found = current_artifacts(folder)
    return found[0] if found is not None else Path(folder)


def read_model_json(artifacts: Path) -> dict | None:
    """The current model.json of an artifact folder (either layout), or None if there is none."""
    found = current_artifacts(artifacts)
    return found[1] if found is not None else None


def portable_path(path: str | Path | None, artifacts: Path) -> str | None:
    """`path` as the files in ARTIFACTS record where something came from: relative to ARTIFACTS (POSIX, such as
    "../data" for the demo's shop beside demo/artifacts) when it lies in the folder that holds ARTIFACTS, else
    None: an absolute path of the machine that wrote the artifacts means nothing on another."""
    if path is None:
        return None
    target, base = Path(path).resolve(), Path(artifacts).resolve()
    if not target.is_relative_to(base.parent):
        return None
    return Path(os.path.relpath(target, base)).as_posix()


def recorded_path(artifacts: Path, recorded: str | None) -> Path | None:
    """A path that model.json records (`portable_path`'s, or an older export's absolute one) as it is on this
    machine, or None when it is not here. Relative to ARTIFACTS, or to its parent when ARTIFACTS is itself a
    version folder (v-NNNNNN) of a versioned export."""
    if not recorded:
        return None
    bases = [Path(artifacts)]
    if VERSION_DIR.match(Path(artifacts).resolve().name):
        bases.append(Path(artifacts).resolve().parent)
    for base in bases:
        path = base / recorded  # an absolute `recorded` stays itself
        if path.exists():
            return path
    return None


def read_artifacts(folder: Path) -> Artifacts:
    """model.json plus both ONNX files, their sha256s checked; UserError naming what is wrong."""
    found = current_artifacts(folder)
    if found is None:
        raise UserError(f"not an artifacts folder (no model.json): {folder}; run `rtd export`")
    folder, model = found  # one read of the pointer: the files and model.json of the same version
    try:
        size = int(model["preprocessing"]["size"])
        wanted = {name: model[name]["onnx_sha256"] for name in ("generator", "embedder")}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{folder / MODEL_JSON}: missing or bad field {e}; re-run `rtd export`") from e
    for name, expected in wanted.items():
        path = folder / f"{name}.onnx"
        if not path.is_file():
            raise UserError(f"artifacts folder {folder} has no {path.name}")
        digest = sha256_file(path)
        if digest != expected:
            raise UserError(f"{path} does not match model.json (sha256 {digest[:12]} != {str(expected)[:12]}): "
                            f"a partial copy or a file from another export")
    return Artifacts(folder, size, model, wanted["embedder"])
