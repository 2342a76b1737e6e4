"""Loss terms as small pure functions: rtdGAN (Eq. 1-4, WGAN-GP), pix2pix and PLDT.

The networks never know their objective (models/ holds modules only); the loop calls these.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Difference of Gaussians approximating the Laplacian in Eq. 3 (Szeliski 2010, Sec. 3.5.2). sigma 1.0 and
# 1.6 = 1.0 * 1.6 is Marr and Hildreth's (1980) ratio at which DoG best matches the Laplacian of Gaussian;
# sigma 1 keeps the band at the finest detail each stage adds (a 5-tap binomial is ~ sigma 1 as well).
DOG_SIGMA_FINE = 1.0
DOG_SIGMA_COARSE = 1.6
PIX2PIX_LAMBDA_L1 = 100.0  # Isola et al. 2017, Sec. 4: lambda = 100 on the L1 term


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (radius ceil(3 sigma), normalised taps) per channel: (B, C, H, W) -> same."""
    B, C, H, W = x.shape
    radius = math.ceil(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()  # taps sum to 1: a flat image stays flat, so DoG(constant) = 0
    xf = x.reshape(B * C, 1, H, W)
    mode = "reflect" if min(H, W) > radius else "replicate"  # reflect needs the pad smaller than the side
    xf = F.conv2d(F.pad(xf, (radius, radius, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    xf = F.conv2d(F.pad(xf, (0, 0, radius, radius), mode=mode), k.view(1, 1, -1, 1))
    return xf.reshape(B, C, H, W)


def difference_of_gaussians(x: Tensor) -> Tensor:
    """Lap(x) of Eq. 3, approximated by G_sigma1 * x - G_sigma2 * x (a band-pass: edges and fine texture).

    Always fp32, even inside a bf16 autocast region (`rtd train --precision bf16`): the two blurs are nearly
    equal and their small difference is the signal, which bf16's 8-bit mantissa would bury in rounding noise
    (computed in bf16, L_lap moves by ~0.4 % on one batch, as much as a training step changes it)."""
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        return gaussian_blur(x, DOG_SIGMA_FINE) - gaussian_blur(x, DOG_SIGMA_COARSE)


def content_loss(fake: Tensor, target: Tensor) -> Tensor:
    """L_con of Eq. 2: mean absolute error between G_i(x) and y_i."""
    return (fake - target).abs().mean()


def laplacian_loss(fake: Tensor, target: Tensor) -> Tensor:
    """L_lap of Eq. 3: L1 between the DoG-filtered target and generated images."""
    return (difference_of_gaussians(fake) - difference_of_gaussians(target)).abs().mean()


def gradient_penalty(critic_out: Tensor, interp: Tensor) -> Tensor:
    """WGAN-GP penalty E[(||grad_z D(x_i, z)||_2 - 1)^2] at interpolates z (Gulrajani et al. 2017).

    `critic_out` must come from `interp` (which requires grad); create_graph=True keeps the penalty
    differentiable so its gradient reaches the critic's parameters (the pix2pix repo's wgangp bug).
    """
    (grad,) = torch.autograd.grad(critic_out.sum(), interp, create_graph=True)  # (B, C, H, W)
    norm = grad.float().flatten(1).norm(2, dim=1)  # (B,) per-sample norm; critic has no batch norm
    return ((norm - 1.0) ** 2).mean()


def critic_loss(
    critic: Callable[[Tensor, Tensor], Tensor], photo_i: Tensor, real: Tensor, fake: Tensor, lambda_gp: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Critic side of Eq. 1 with WGAN-GP: E[D(x_i, G(x))] - E[D(x_i, y_i)] + lambda_gp * GP.

    Real, fake and interpolates go through the critic in ONE forward pass, so a DistributedDataParallel
    critic sees exactly one forward per backward (it needs no batch norm for this to be per-sample).
    """
    B = real.shape[0]
    real, fake = real.float(), fake.detach().float()  # a bf16 generator output: interpolate in fp32
    eps = torch.rand(B, 1, 1, 1, device=real.device, dtype=real.dtype)  # one mixing weight per sample
    interp = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(photo_i.repeat(3, 1, 1, 1), torch.cat([real, fake, interp]))  # (3B, 1, h, w)
    d_real, d_fake, d_interp = scores.float().split(B)
    wasserstein = d_fake.mean() - d_real.mean()
    gp = gradient_penalty(d_interp, interp)
    loss = wasserstein + lambda_gp * gp
    return loss, {"d_wasserstein": wasserstein.detach(), "d_gp": gp.detach(), "d_loss": loss.detach()}


def generator_adversarial_loss(critic_fake: Tensor) -> Tensor:
    """Generator side of Eq. 1: -E[D(x_i, G_i(x))]."""
    return -critic_fake.float().mean()


def rtdgan_generator_loss(
    critic_fake: Tensor, fake: Tensor, target: Tensor, lambda_adv: float, lambda_con: float, lambda_lap: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 4 for the generator: lambda_adv L_adv + lambda_con L_con + lambda_lap L_lap."""
    fake, target = fake.float(), target.float()
    adv = generator_adversarial_loss(critic_fake)
    con = content_loss(fake, target)
    lap = laplacian_loss(fake, target)
    loss = lambda_adv * adv + lambda_con * con + lambda_lap * lap
    return loss, {"g_adv": adv.detach(), "g_con": con.detach(), "g_lap": lap.detach(), "g_loss": loss.detach()}


def bce(logits: Tensor, is_real: bool) -> Tensor:
    """Binary cross-entropy with logits against an all-real or all-fake label."""
    logits = logits.float()
    target = torch.ones_like(logits) if is_real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def pix2pix_discriminator_loss(logits: Tensor, is_real: bool) -> Tensor:
    """One half of pix2pix D's BCE: the objective is halved "to slow down D" (Isola et al. 2017, Sec. 3.3).

    Real and fake batches go through D separately (their batch norm statistics stay apart, as in the
    reference code), so the loop back-propagates the real and the fake half one after the other.
    """
    return 0.5 * bce(logits, is_real)


def pix2pix_generator_loss(fake_logits: Tensor, fake: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """pix2pix G: fool D (non-saturating BCE) + 100 * L1 to the target."""
    adv = bce(fake_logits, True)
    l1 = content_loss(fake.float(), target.float())
    loss = adv + PIX2PIX_LAMBDA_L1 * l1
    return loss, {"g_adv": adv.detach(), "g_con": l1.detach(), "g_loss": loss.detach()}


# PLDT (Yoo et al. 2016, Sec. 3): D_R sees real products (label 1) and generated ones (0); D_A sees the
# associated (photo, product) pair (1), the photo with an unassociated real product (0) and the photo with
# the generated image (0). Each kind of input is its own batch (batch norm statistics stay apart) and the
# kinds are weighted equally, so the loop back-propagates one kind at a time.


def pldt_real_fake_loss(logits: Tensor, is_real: bool) -> Tensor:
    """D_R's loss on one kind of input (real or generated product), weighted 1/2."""
    return bce(logits, is_real) / 2


def pldt_domain_loss(logits: Tensor, is_associated: bool) -> Tensor:
    """D_A's loss on one kind of pair (associated, unassociated or generated), weighted 1/3."""
    return bce(logits, is_associated) / 3


def pldt_converter_loss(fake_logits: Tensor, fake_pair_logits: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """PLDT converter: fool both D_R (looks like a real product) and D_A (looks associated with the photo)."""
    adv_real_fake = bce(fake_logits, True)
    adv_domain = bce(fake_pair_logits, True)
    loss = 0.5 * (adv_real_fake + adv_domain)
    return loss, {"g_real_fake": adv_real_fake.detach(), "g_domain": adv_domain.detach(), "g_loss": loss.detach()}
