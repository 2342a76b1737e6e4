"""Small pieces shared by the networks: resolution checks, channel widths, pixel norm, weight init."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def log2_resolution(resolution: int, minimum: int = 16, what: str = "resolution") -> int:
    """log2 of a power-of-two resolution >= minimum; ValueError with a readable message otherwise."""
    if not isinstance(resolution, int) or resolution < minimum or resolution & (resolution - 1):
        raise ValueError(f"{what} must be a power of two >= {minimum} (16, 32, 64, ...), got {resolution!r}")
    return resolution.bit_length() - 1


def encoder_widths(depth: int, width: int, max_width: int) -> list[int]:
    """Channels of `depth` stride-2 blocks, pix2pix style: w, 2w, 4w, 8w, then capped at max_width."""
    if width < 1 or max_width < width:
        raise ValueError(f"need 1 <= width <= max_width, got width={width}, max_width={max_width}")
    return [min(width * 2**j, max_width) for j in range(depth)]


class PixelNorm(nn.Module):
    """Normalise each pixel's feature vector to unit RMS over channels (Karras et al. 2017, Sec. 4.2)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), unit RMS over C at every pixel."""
        # No batch or spatial statistics, so it behaves the same in train() and eval(),
        # at batch size 1 and on a 1x1 bottleneck, where batch or instance norm would zero the features.
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


def resize_to(image: Tensor, size: int) -> Tensor:
    """Average-pool a square (B, C, s, s) batch down to (B, C, size, size); s must be size * 2^k."""
    s = image.shape[-1]
    if s == size:
        return image
    if s < size or s % size:
        raise ValueError(f"cannot shrink a {s} px image to {size} px (need a multiple of {size})")
    # Box filter: exact area downsampling for power-of-two ratios, and a plain AveragePool in ONNX.
    return F.avg_pool2d(image, kernel_size=s // size)


def init_normal(module: nn.Module, std: float = 0.02) -> None:
    """DCGAN / pix2pix init: conv weights N(0, std), norm scales N(1, std), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
