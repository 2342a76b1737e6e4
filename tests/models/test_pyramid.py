"""The Gaussian pyramid of Sec. 3.3: shapes, flat images, agreement with area downsampling, low-pass."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rtdgan.models.pyramid import blur_5tap, gaussian_pyramid, stage_target


def test_level_shapes_halve() -> None:
    y = torch.randn(2, 3, 32, 32)
    levels = gaussian_pyramid(y, 4)
    assert [tuple(t.shape) for t in levels] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4)]
    assert levels[0] is y  # level 0 is the original target (Sec. 3.3)


def test_constant_image_stays_constant() -> None:
    y = torch.full((1, 3, 32, 32), 0.3)
    y[:, 1] = -0.7  # a different constant per channel: channels must not mix
    for level in gaussian_pyramid(y, 4):
        assert torch.allclose(level[:, 0], torch.full_like(level[:, 0], 0.3), atol=1e-6)
        assert torch.allclose(level[:, 1], torch.full_like(level[:, 1], -0.7), atol=1e-6)


def test_smooth_image_matches_area_downsampling() -> None:
    # A smooth image (a wide blob and a slow wave) barely changes under a Gaussian blur, so each level
    # must be close to plain area downsampling, at the same pixel positions (no half-pixel shift).
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    y = (torch.exp(-(xx**2 + yy**2) / 0.5) + 0.3 * torch.sin(2 * xx)).expand(1, 3, 64, 64)
    levels = gaussian_pyramid(y, 3)
    for k in (1, 2):
        area = F.avg_pool2d(y, 2**k)
        assert (levels[k] - area).abs().max() < 0.03, k


def test_checkerboard_energy_vanishes() -> None:
    # The finest possible pattern sits at the Nyquist frequency, where the [1,4,6,4,1] filter is zero.
    idx = torch.arange(32)
    board = ((idx[:, None] + idx[None, :]) % 2 * 2 - 1).float().expand(1, 3, 32, 32)
    assert blur_5tap(board).abs().max() < 1e-6
    assert gaussian_pyramid(board, 2)[1].abs().max() < 1e-6


def test_random_image_loses_high_frequencies() -> None:
    # White noise: averaging 2x2 alone keeps a quarter of the variance; the blur must remove most of that.
    g = torch.Generator().manual_seed(0)
    y = torch.randn(4, 3, 64, 64, generator=g)
    level1 = gaussian_pyramid(y, 2)[1]
    assert level1.var() < 0.1 < F.avg_pool2d(y, 2).var()


def test_stage_target_is_level_n_minus_i() -> None:
    y = torch.randn(2, 3, 32, 32)
    levels = gaussian_pyramid(y, 3)
    assert torch.equal(stage_target(y, 1, 3), levels[2])  # stage 1: the coarsest level y_g^{N-1}
    assert torch.equal(stage_target(y, 2, 3), levels[1])
    assert stage_target(y, 3, 3) is y  # stage N: the original target
    with pytest.raises(AssertionError):
        stage_target(y, 4, 3)
