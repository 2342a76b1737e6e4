"""The conditional PatchGAN critic D(x_i, y_i) shared by every rough-to-detail stage (Eq. 1, Sec. 3.1, 4.1)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rtdgan.models.layers import init_normal


@dataclass(frozen=True)
class CriticConfig:
    width: int = 64  # channels of the first convolution (pix2pix ndf)
    layers: int = 3  # stride-2 convolutions; the smallest accepted image is 2^layers px


class ConditionalPatchCritic(nn.Module):
    """Wasserstein critic on (photo, image) pairs: one unbounded score per patch, no sigmoid, no norm.

    Layout (layers = 3): conv4x4/2 -> conv4x4/2 -> conv4x4/2 -> conv3x3/1 -> conv3x3/1 -> 1 channel,
    LeakyReLU 0.2 between them: the 70x70 PatchGAN of pix2pix with two changes.
    - No batch norm (nor any other norm): the WGAN-GP penalty is on the gradient of each sample's score
      with respect to that sample alone, which batch statistics would couple (Gulrajani et al. 2017).
    - The two stride-1 convolutions are 3x3 with padding 1 instead of 4x4, so they keep the map size:
      the map is (s / 2^layers)^2, one score at 8 px, 32 x 32 at 256 px, and the receptive field is 54 px.
      The paper uses a single D for all stages (Sec. 1), so the same weights must score the coarsest
      stage's 8 px images as well as the final ones; the 4x4 stride-1 tail would leave no map below 24 px.
    """

    def __init__(self, cfg: CriticConfig) -> None:
        super().__init__()
        if cfg.layers < 1 or cfg.width < 1:
            raise ValueError(f"critic needs layers >= 1 and width >= 1, got {cfg}")
        self.cfg = cfg
        self.min_size = 2**cfg.layers
        widths = [cfg.width * min(2**n, 8) for n in range(cfg.layers + 1)]  # w, 2w, 4w, 8w, 8w, ...
        body: list[nn.Module] = []
        in_ch = 6  # photo and image concatenated: the critic is conditional (Eq. 1)
        for n in range(cfg.layers):
            body += [nn.Conv2d(in_ch, widths[n], kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            in_ch = widths[n]
        body += [nn.Conv2d(in_ch, widths[-1], kernel_size=3, padding=1), nn.LeakyReLU(0.2)]
        body += [nn.Conv2d(widths[-1], 1, kernel_size=3, padding=1)]
        self.body = nn.Sequential(*body)
        init_normal(self)

    def forward(self, photo: Tensor, image: Tensor) -> Tensor:
        """photo, image (B, 3, s, s) with s a multiple of 2^layers -> scores (B, 1, s/2^layers, s/2^layers)."""
        if photo.shape != image.shape or photo.ndim != 4 or photo.shape[1] != 3:
            raise ValueError(
                f"critic needs photo and image of the same shape (B, 3, s, s), got "
                f"{tuple(photo.shape)} and {tuple(image.shape)}"
            )
        s = photo.shape[-1]
        if s < self.min_size or s % self.min_size:
            raise ValueError(
                f"critic with {self.cfg.layers} layers needs images of a multiple of {self.min_size} px, got {s}"
            )
        return self.body(torch.cat([photo, image], dim=1))  # (B, 1, s / 2^layers, s / 2^layers)
