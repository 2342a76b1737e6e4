"""The pix2pix baseline (Isola et al. 2017): U-Net generator and 70x70 PatchGAN discriminator.

Follows pytorch-CycleGAN-and-pix2pix's `unet_256` and `basic` (n_layers = 3) networks, generalised from
256 px to any power-of-two resolution S >= 32 by using M = log2(S) down blocks, so the bottleneck is
always 1x1. Widths are w, 2w, 4w, 8w, then 8w. Dropout sits where unet_256 puts it: in the second,
third and fourth decoder blocks counted from the bottleneck (never in the outermost one).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rtdgan.models.layers import encoder_widths, init_normal, log2_resolution

# The 70x70 PatchGAN's two 4x4 stride-1 convolutions shrink the map by 2 px each, so it needs >= 24 px;
# the power-of-two resolutions that satisfy this start at 32.
MIN_RESOLUTION = 32


@dataclass(frozen=True)
class Pix2PixConfig:
    resolution: int = 256  # S, a power of two >= 32
    width: int = 64  # ngf = ndf
    dropout: float = 0.5  # dropout probability in the three dropout decoder blocks; 0 turns it off


class UNetGenerator(nn.Module):
    """U-Net: photo (B, 3, S, S) in [-1, 1] -> image (B, 3, S, S) in [-1, 1]."""

    def __init__(self, cfg: Pix2PixConfig) -> None:
        super().__init__()
        M = log2_resolution(cfg.resolution, minimum=MIN_RESOLUTION)
        if not 0.0 <= cfg.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
        self.cfg = cfg
        ch = encoder_widths(M, cfg.width, 8 * cfg.width)  # ch[j] = channels of down block j (0-based)

        # Down blocks, as unet_256: the outermost is a bare conv; the others are LeakyReLU-conv-BN,
        # except the innermost (1x1 output), which has no BN.
        # Down convolutions have no bias, as in the original (use_bias is False with batch norm).
        downs: list[nn.Module] = [nn.Conv2d(3, ch[0], 4, 2, 1, bias=False)]
        for j in range(1, M):
            innermost = j == M - 1
            downs.append(
                nn.Sequential(
                    nn.LeakyReLU(0.2),
                    nn.Conv2d(ch[j - 1], ch[j], 4, 2, 1, bias=False),
                    nn.Identity() if innermost else nn.BatchNorm2d(ch[j]),
                )
            )
        self.downs = nn.ModuleList(downs)

        # Up blocks, innermost first: ReLU-convT-BN(-dropout); the outermost ends in tanh. Every block
        # but the innermost reads its input concatenated with the mirrored down block's output.
        ups: list[nn.Module] = []
        for u in range(M):  # u = 0 is the innermost up block, u = M - 1 the outermost
            j = M - 1 - u  # the mirrored down block
            in_ch = ch[j] if u == 0 else 2 * ch[j]
            if u == M - 1:
                ups.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(in_ch, 3, 4, 2, 1), nn.Tanh()))
                continue
            drop = cfg.dropout > 0 and 1 <= u <= 3
            ups.append(
                nn.Sequential(
                    nn.ReLU(),
                    nn.ConvTranspose2d(in_ch, ch[j - 1], 4, 2, 1, bias=False),
                    nn.BatchNorm2d(ch[j - 1]),
                    nn.Dropout(cfg.dropout) if drop else nn.Identity(),
                )
            )
        self.ups = nn.ModuleList(ups)
        init_normal(self)

    def forward(self, photo: Tensor) -> Tensor:
        """(B, 3, S, S) -> (B, 3, S, S) in [-1, 1]."""
        S = self.cfg.resolution
        if photo.ndim != 4 or tuple(photo.shape[1:]) != (3, S, S):
            raise ValueError(f"photo must be (B, 3, {S}, {S}), got {tuple(photo.shape)}")
        skips = []
        x = photo
        for down in self.downs:
            x = down(x)  # (B, C_j, S / 2^(j+1), S / 2^(j+1))
            skips.append(x)
        x = self.ups[0](skips[-1])  # (B, C_{M-2}, 2, 2)
        for u in range(1, len(self.ups)):
            x = self.ups[u](torch.cat([skips[-1 - u], x], dim=1))  # (B, C, 2^(u+1), 2^(u+1))
        return x  # (B, 3, S, S)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN (n_layers = 3, batch norm), conditional: (photo, image) -> logits (B, 1, h, w)."""

    def __init__(self, cfg: Pix2PixConfig) -> None:
        super().__init__()
        log2_resolution(cfg.resolution, minimum=MIN_RESOLUTION)
        self.cfg = cfg
        w = cfg.width
        self.body = nn.Sequential(
            nn.Conv2d(6, w, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(w, 2 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * w, 8 * w, 4, 1, 1, bias=False),
            nn.BatchNorm2d(8 * w),
            nn.LeakyReLU(0.2),
            nn.Conv2d(8 * w, 1, 4, 1, 1),  # logits: the loss (BCE-with-logits) lives in training/
        )
        init_normal(self)

    def forward(self, photo: Tensor, image: Tensor) -> Tensor:
        """photo, image (B, 3, s, s), s >= 24 -> logits (B, 1, s/8 - 2, s/8 - 2); 30 x 30 at 256 px."""
        if photo.shape != image.shape or photo.ndim != 4 or photo.shape[1] != 3 or photo.shape[-1] < 24:
            raise ValueError(
                f"discriminator needs photo and image of the same shape (B, 3, s, s) with s >= 24, got "
                f"{tuple(photo.shape)} and {tuple(image.shape)}"
            )
        return self.body(torch.cat([photo, image], dim=1))
