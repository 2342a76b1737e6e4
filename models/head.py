"""The learned retrieval head: two small projections into one shared, L2-normalised space.

The frozen embedder compares a query with the catalog by the cosine of its raw ImageNet features. The head
learns that comparison instead: its *query* side maps the embedder features of the street photo's query
images — the generated product image, the photo itself, or both concatenated ("fused": [generated ‖ photo],
2D numbers) — and its *catalog* side maps a catalog product image's features (D numbers). Both end in an
L2 normalisation, so the index stays an inner-product (cosine) index. Training (InfoNCE over the training
catalog) and export live in training/head.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from rtdgan.index.runtime.head import QUERY_INPUTS

HeadMode = Literal["fused", "generated", "photo"]
MODES: tuple[HeadMode, ...] = ("fused", "generated", "photo")


@dataclass(frozen=True)
class HeadConfig:
    """The head's shape: which query, the embedder's dim D, the shared space's dim E, MLP or linear."""

    mode: HeadMode = "fused"
    dim: int = 1280  # D: the embedder's output (EfficientNet-Lite0: 1280, DenseNet-121: 1024)
    out_dim: int = 256  # E: the shared space
    hidden: int = 0  # 0: one Linear per side; > 0: Linear(., hidden) -> GELU -> Linear(hidden, E)
    dropout: float = 0.0  # on the input features while training (a regulariser; none at inference or in ONNX)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.dim < 1 or self.out_dim < 1 or self.hidden < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need dim >= 1, out_dim >= 1, hidden >= 0, 0 <= dropout < 1; got {self.dim}, "
                             f"{self.out_dim}, {self.hidden}, {self.dropout}")

    @property
    def query_inputs(self) -> tuple[str, ...]:
        return QUERY_INPUTS[self.mode]

    @property
    def query_dim(self) -> int:
        """F: the query side's input width (2D when fused, else D)."""
        return len(self.query_inputs) * self.dim


class Projection(nn.Module):
    """features (B, in) -> unit vectors (B, E): [dropout while training,] a Linear (or a one-hidden-layer MLP), then
    L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        if hidden:
            self.net: nn.Module = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Linear(in_dim, out_dim)

    def forward(self, features: Tensor) -> Tensor:
        return F.normalize(self.net(self.dropout(features)), dim=-1)


class RetrievalHead(nn.Module):
    """`query` (B, F) -> (B, E) and `catalog` (B, D) -> (B, E), both unit vectors; score = their dot product."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.query = Projection(cfg.query_dim, cfg.out_dim, cfg.hidden, cfg.dropout)
        self.catalog = Projection(cfg.dim, cfg.out_dim, cfg.hidden, cfg.dropout)

    def forward(self, query_features: Tensor, catalog_features: Tensor) -> tuple[Tensor, Tensor]:
        """Both sides at once: (B, F), (P, D) -> (B, E), (P, E)."""
        return self.query(query_features), self.catalog(catalog_features)
