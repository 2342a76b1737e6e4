"""Checkpoint I/O: state_dicts + optimiser states + config + code version + step/stage/alpha + RNG states.

A checkpoint holds only tensors and plain Python containers, so it loads with `weights_only=True`
(no pickled code runs when a checkpoint from elsewhere is opened).
"""

from __future__ import annotations

import random
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rtdgan.index.errors import UserError
from rtdgan.index.files import write_atomic

CHECKPOINT_FORMAT = 1


def code_version() -> str:
    """`git describe --always --dirty` of the source tree, or the installed package version."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=True)
        if out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return "rtdgan " + metadata.version("rtdgan")
    except metadata.PackageNotFoundError:
        return "unknown"


def capture_rng() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states, as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo `capture_rng`: the next random draws are the ones the saved run would have made."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically and durably (`rtdgan.index.files.write_atomic`): a reader sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: torch.save({"format": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`; UserError if it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint to resume from: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a usable checkpoint"
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path}: not an rtdgan checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def cast_floats(state: Any, source: torch.dtype, target: torch.dtype) -> Any:
    """A copy of a checkpoint's nested dicts/lists with every `source`-dtype tensor cast to `target`.

    `cast_floats(state, torch.float32, torch.bfloat16)` halves a training checkpoint (weights and the optimisers'
    moments) for carrying it where space counts — bench/experiments/results_synthetic.py commits an unfinished
    run's so that a run on another machine resumes it; the reverse cast restores the dtypes training expects. Other tensors (the RNG
    states' bytes) and 0-d ones (Adam's step counters, which bf16 would round) are left as they are."""
    if isinstance(state, torch.Tensor):
        return state.to(target) if state.dtype == source and state.dim() > 0 else state
    if isinstance(state, dict):
        return {k: cast_floats(v, source, target) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cast_floats(v, source, target) for v in state)
    return state
