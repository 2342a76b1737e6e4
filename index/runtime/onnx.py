"""The artifact graphs as callables (docs/architecture.md, "The artifact contract"). No torch.

`OnnxEmbedder`, `OnnxGenerator` and `OnnxHead` are thin callables over the artifact graphs, run by the backend
they are given (index/runtime/backends.py: onnxruntime, the default, or OpenVINO).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rtdgan.index.errors import UserError
from rtdgan.index.runtime.backends import Backend

log = logging.getLogger(__name__)

class OnnxModel:
    """One-input, one-output ONNX graph over float32 `(B, 3, S, S)` batches, on a backend (index/backends.py).

    `backend` None: onnxruntime fp32 with `providers` and `threads` (the reference engine)."""

    def __init__(self, path: Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 backend: Backend | None = None) -> None:
        self.path = Path(path)
        self.backend = backend if backend is not None else Backend(
            threads=threads, providers=tuple(providers) if providers else None)
        if threads is not None and threads < 1:
            raise UserError(f"threads must be >= 1, got {threads}")
        try:
            self.runner = self.backend.load(self.path)
        except UserError as e:
            if self.path.name in str(e):
                raise
            raise UserError(f"{self.path}: {e}") from e
        shape = self.runner.input_shape  # e.g. ['batch', 3, 256, 256]
        # S is static in our exports; a symbolic dim (a str) means "any size".
        self.size: int | None = shape[-1] if len(shape) == 4 and isinstance(shape[-1], int) else None
        self.providers = self.runner.providers

    def check(self, batch: np.ndarray) -> None:
        """ValueError unless `batch` is what this graph takes: (B, 3, S, S) images."""
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, S, S) batch, got shape {batch.shape}")
        if self.size is not None and batch.shape[-2:] != (self.size, self.size):
            raise ValueError(f"{self.path.name} takes {self.size}x{self.size} images, got {batch.shape[-2:]}")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 in [-1, 1] -> the graph's output for the batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        self.check(batch)
        return self.runner.run(batch)


class OnnxEmbedder(OnnxModel):
    """embedder.onnx: `image` (B, 3, S, S) in [-1, 1] -> `embedding` (B, D) unit vectors."""

    def __init__(self, path: Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__(path, providers, threads, backend)
        dim = self.runner.output_shape[-1]
        self.dim: int | None = dim if isinstance(dim, int) else None


class OnnxGenerator(OnnxModel):
    """generator.onnx: `photo` (B, 3, S, S) in [-1, 1] -> `product` (B, 3, S, S) in [-1, 1]."""


class OnnxHead(OnnxModel):
    """head_query.onnx / head_catalog.onnx (the retrieval head): `features` (B, F) float32 -> `embedding` (B, E) unit vectors."""

    def __init__(self, path: Path, providers: Sequence[str] | None = None, threads: int | None = None,
                 backend: Backend | None = None) -> None:
        super().__init__(path, providers, threads, backend)
        width = self.runner.input_shape[-1]
        self.in_dim: int | None = width if isinstance(width, int) else None

    def check(self, batch: np.ndarray) -> None:
        """ValueError unless `batch` is (B, F) features of this head's width."""
        if batch.ndim != 2 or (self.in_dim is not None and batch.shape[1] != self.in_dim):
            raise ValueError(f"{self.path.name} takes (B, {self.in_dim}) features, got {batch.shape}")
