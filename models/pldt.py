"""The PLDT baseline (Yoo et al. 2016, "Pixel-level domain transfer"): converter and two discriminators.

PLDT works at 64 x 64 (R = 64; smaller for tiny tests). All three networks are DCGAN-like: 5x5 stride-2
convolutions with batch norm (none on the first layer) and LeakyReLU 0.2 down to 4 x 4, then a 4x4 valid
convolution to 1 x 1. The converter has no skip connections: its encoder ends in a `code_dim`-channel code
(64 in the PLDT paper) and a mirrored decoder of 5x5 fractionally-strided convolutions with batch norm
and ReLU, tanh at the end. Widths are w, 2w, 4w, 8w (capped at 8w); the PLDT paper used 128..1024,
which is width = 128. Inputs larger than R are box-downsampled to R first, so callers may pass S-sized
photos and products.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rtdgan.models.layers import encoder_widths, init_normal, log2_resolution, resize_to


@dataclass(frozen=True)
class PLDTConfig:
    resolution: int = 64  # R: the converter's output size, a power of two >= 16
    width: int = 64  # channels of the first convolution
    code_dim: int = 64  # channels of the converter's 1x1 code


def _down_stack(in_ch: int, cfg: PLDTConfig) -> tuple[nn.Sequential, int]:
    """5x5 stride-2 conv blocks from R px down to 4 px; returns the stack and its output channels."""
    depth = log2_resolution(cfg.resolution) - 2  # R -> 4 px
    widths = encoder_widths(depth, cfg.width, 8 * cfg.width)
    layers: list[nn.Module] = []
    for j, out_ch in enumerate(widths):
        layers += [
            nn.Conv2d(in_ch, out_ch, 5, 2, 2, bias=j == 0),
            nn.BatchNorm2d(out_ch) if j > 0 else nn.Identity(),  # DCGAN: no BN on the input layer
            nn.LeakyReLU(0.2),
        ]
        in_ch = out_ch
    return nn.Sequential(*layers), in_ch


class PLDTConverter(nn.Module):
    """Encoder-decoder without skips: photo (B, 3, s, s), s = R * 2^k -> image (B, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: PLDTConfig) -> None:
        super().__init__()
        if cfg.code_dim < 1:
            raise ValueError(f"code_dim must be >= 1, got {cfg.code_dim}")
        self.cfg = cfg
        down, top = _down_stack(3, cfg)
        # Code: 4x4 valid conv to 1x1; no BN there, so batch size 1 still trains.
        self.encoder = nn.Sequential(down, nn.Conv2d(top, cfg.code_dim, 4), nn.LeakyReLU(0.2))
        widths = encoder_widths(log2_resolution(cfg.resolution) - 2, cfg.width, 8 * cfg.width)[::-1]
        up: list[nn.Module] = [nn.ConvTranspose2d(cfg.code_dim, widths[0], 4, bias=False)]  # (B, 8w, 4, 4)
        up += [nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for j, in_ch in enumerate(widths):
            last = j == len(widths) - 1
            out_ch = 3 if last else widths[j + 1]
            # kernel 5, stride 2, padding 2, output_padding 1: exactly doubles the size.
            up.append(nn.ConvTranspose2d(in_ch, out_ch, 5, 2, 2, output_padding=1, bias=last))
            up += [nn.Tanh()] if last else [nn.BatchNorm2d(out_ch), nn.ReLU()]
        self.decoder = nn.Sequential(*up)
        init_normal(self)

    def forward(self, photo: Tensor) -> Tensor:
        """(B, 3, s, s) -> (B, 3, R, R) in [-1, 1]."""
        code = self.encoder(resize_to(photo, self.cfg.resolution))  # (B, code_dim, 1, 1)
        return self.decoder(code)  # (B, 3, R, R)


class PLDTRealFakeDiscriminator(nn.Module):
    """D_R: is this a real product image? (B, 3, s, s) -> one logit per image (B,)."""

    def __init__(self, cfg: PLDTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        down, top = _down_stack(3, cfg)
        self.body = nn.Sequential(down, nn.Conv2d(top, 1, 4))  # (B, 1, 1, 1) logit, no sigmoid
        init_normal(self)

    def forward(self, image: Tensor) -> Tensor:
        """(B, 3, s, s), s = R * 2^k -> logits (B,)."""
        return self.body(resize_to(image, self.cfg.resolution)).flatten()  # (B,)


class PLDTDomainDiscriminator(nn.Module):
    """D_A: is this image the product worn in this photo? (photo, image) -> one logit per pair (B,)."""

    def __init__(self, cfg: PLDTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        down, top = _down_stack(6, cfg)  # photo and image concatenated on channels
        self.body = nn.Sequential(down, nn.Conv2d(top, 1, 4))
        init_normal(self)

    def forward(self, photo: Tensor, image: Tensor) -> Tensor:
        """photo (B, 3, s, s), image (B, 3, t, t), both R * 2^k -> logits (B,)."""
        R = self.cfg.resolution
        pair = torch.cat([resize_to(photo, R), resize_to(image, R)], dim=1)  # (B, 6, R, R)
        return self.body(pair).flatten()  # (B,)
