"""Gaussian image pyramid: the intermediate targets of rough-to-detail training (Sec. 3.3) and the embedders'
comparison scale (models/embedders.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# The 5-tap binomial kernel [1, 4, 6, 4, 1] / 16 is the classic Burt-Adelson REDUCE filter (Szeliski 2010,
# Sec. 3.5): a cheap, separable approximation of a Gaussian with sigma ~ 1 that suppresses frequencies
# above the new Nyquist limit before the 2x decimation.
BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def blur_5tap(x: Tensor) -> Tensor:
    """Separable [1,4,6,4,1]/16 blur of each channel, reflect-padded so borders do not darken."""
    B, C, H, W = x.shape
    k = torch.tensor(BINOMIAL_5, dtype=x.dtype, device=x.device) / 16.0  # (5,)
    xf = x.reshape(B * C, 1, H, W)
    # Reflect padding needs at least 3 pixels per side; tiny levels fall back to replicate.
    mode = "reflect" if min(H, W) > 2 else "replicate"
    xf = F.conv2d(F.pad(xf, (2, 2, 0, 0), mode=mode), k.view(1, 1, 1, 5))  # horizontal
    xf = F.conv2d(F.pad(xf, (0, 0, 2, 2), mode=mode), k.view(1, 1, 5, 1))  # vertical
    return xf.reshape(B, C, H, W)


def pyramid_down(x: Tensor) -> Tensor:
    """One pyramid level: Gaussian blur, then 2x downsample: (B, C, H, W) -> (B, C, H/2, W/2).

    The downsample averages each 2x2 block instead of keeping every second pixel: output pixel i then
    sits at input position 2i + 0.5, the same place as in the area-downsampled photo x_i (Eq. 1) and in
    the generator's 2x nearest upsampling, whereas [::2] would shift each level by a quarter pixel.
    Blur then box is the 6-tap binomial [1, 5, 10, 10, 5, 1] / 32, still a Gaussian-like low-pass.
    """
    return F.avg_pool2d(blur_5tap(x), kernel_size=2)


def gaussian_pyramid(y: Tensor, levels: int) -> list[Tensor]:
    """Levels y_g^0 .. y_g^{levels-1} of the Gaussian pyramid; level 0 is y itself (Sec. 3.3)."""
    assert levels >= 1, f"a pyramid needs at least one level, got {levels}"
    assert y.ndim == 4, f"expected (B, C, H, W), got shape {tuple(y.shape)}"
    assert y.shape[-1] % 2 ** (levels - 1) == 0 and y.shape[-2] % 2 ** (levels - 1) == 0, (
        f"size {tuple(y.shape[-2:])} is not divisible by 2**{levels - 1}"
    )
    out = [y]
    for _ in range(levels - 1):
        out.append(pyramid_down(out[-1]))
    return out


def stage_target(product: Tensor, stage: int, stages: int) -> Tensor:
    """Intermediate target y_i = y_g^{N-i} for stage i in 1..N (Algorithm 1, line 4)."""
    assert 1 <= stage <= stages, f"stage {stage} outside 1..{stages}"
    return gaussian_pyramid(product, stages - stage + 1)[-1]
