"""The person-box regressor before the generator (for street-framed photos): a tiny CNN.

A street photo, letterboxed to N px (64 by default, the shared preprocessing) -> the person's box
(x0, y0, x1, y1) in [0, 1] of that square. Four stride-2 convs (N -> N/16; one more conv at N/8 and at N/16,
where it is cheap: about 0.25 M parameters, a few MFLOPs a photo), then two linear layers to
(centre x, centre y, width, height), each squashed by a sigmoid; the box is built from them and clipped to
the square, so it is always valid (x0 <= x1, y0 <= y1). Training (L1 + GIoU on synthetic boxes) and export
live in training/crop.py; the run-time side (squaring to LookBook framing, cutting) in index/crop.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class CropperConfig:
    """Input side N (a multiple of 16) and the first conv's channels (doubled per stride, to 8x)."""

    size: int = 64
    width: int = 16

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16 or self.width < 1:
            raise ValueError(f"need size a multiple of 16 (>= 16) and width >= 1, got {self.size}, {self.width}")


def _conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class PersonCropper(nn.Module):
    """(B, 3, N, N) in [-1, 1] -> (B, 4) boxes (x0, y0, x1, y1) in [0, 1]."""

    def __init__(self, cfg: CropperConfig = CropperConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        chans = [w, 2 * w, 4 * w, 8 * w]
        self.features = nn.Sequential(*_conv(3, chans[0], 2), *_conv(chans[0], chans[1], 2),
                                      *_conv(chans[1], chans[2], 2), *_conv(chans[2], chans[2], 1),
                                      *_conv(chans[2], chans[3], 2), *_conv(chans[3], chans[3], 1))
        cells = (cfg.size // 16) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(chans[3] * cells, 128), nn.ReLU(inplace=True),
                                  nn.Linear(128, 4))

    def forward(self, image: Tensor) -> Tensor:
        c = torch.sigmoid(self.head(self.features(image)))  # (B, 4): cx, cy, w, h
        half = c[:, 2:] / 2
        return torch.cat([c[:, :2] - half, c[:, :2] + half], dim=1).clamp(0.0, 1.0)
