"""Loss terms (Eq. 1-4, WGAN-GP, pix2pix, PLDT) against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rtdgan.models.critic import ConditionalPatchCritic, CriticConfig
from rtdgan.training.losses import (
    PIX2PIX_LAMBDA_L1,
    bce,
    content_loss,
    critic_loss,
    difference_of_gaussians,
    generator_adversarial_loss,
    gradient_penalty,
    laplacian_loss,
    pix2pix_discriminator_loss,
    pix2pix_generator_loss,
    pldt_converter_loss,
    pldt_domain_loss,
    pldt_real_fake_loss,
    rtdgan_generator_loss,
)


class LinearCritic(nn.Module):
    """D(x_i, z) = w . z: its gradient with respect to z is w everywhere, so GP = (||w|| - 1)^2 exactly."""

    def __init__(self, w: Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, photo: Tensor, image: Tensor) -> Tensor:
        return (image * self.w).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1)  # (B, 1, 1, 1)


def test_gradient_penalty_of_a_linear_critic_is_exact() -> None:
    w = torch.full((3, 4, 4), 0.5)  # ||w|| = 0.5 * sqrt(48)
    critic = LinearCritic(w)
    z = torch.randn(5, 3, 4, 4, requires_grad=True)
    gp = gradient_penalty(critic(z, z), z)
    assert gp.item() == pytest.approx((0.5 * math.sqrt(48) - 1) ** 2, rel=1e-5)


def test_critic_loss_hand_computed() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4) * 0.1
    critic = LinearCritic(w)
    photo, real, fake = torch.randn(3, 2, 3, 4, 4).unbind(0)
    loss, terms = critic_loss(critic, photo, real, fake, lambda_gp=10.0)
    d_real = (real * w).sum(dim=(1, 2, 3)).mean()
    d_fake = (fake * w).sum(dim=(1, 2, 3)).mean()
    gp = (w.norm() - 1) ** 2  # the same at every interpolate: the critic is linear
    assert loss.item() == pytest.approx((d_fake - d_real + 10 * gp).item(), rel=1e-5)
    assert terms["d_gp"].item() == pytest.approx(gp.item(), rel=1e-5)
    # The penalty's gradient reaches the critic: d/dw of 10 (||w|| - 1)^2 = 20 (||w|| - 1) w / ||w||.
    loss.backward()
    expected = (fake.mean(0) - real.mean(0)) + 20 * (w.norm() - 1) * w / w.norm()
    assert torch.allclose(critic.w.grad, expected, atol=1e-5)


def test_gradient_penalty_reaches_critic_parameters() -> None:
    # A real (nonlinear) conditional critic: the parameter gradients must depend on lambda_gp.
    photo, real, fake = torch.randn(3, 2, 3, 16, 16).unbind(0)
    grads = []
    for lambda_gp in (0.0, 10.0):
        torch.manual_seed(0)
        critic = ConditionalPatchCritic(CriticConfig(width=4, layers=2))
        loss, _ = critic_loss(critic, photo, real, fake, lambda_gp)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in critic.parameters()]))
    assert not torch.allclose(grads[0], grads[1])
    assert (grads[0] - grads[1]).abs().max() > 1e-4


def test_dog_of_constant_image_is_zero() -> None:
    flat = torch.full((2, 3, 16, 16), 0.42)
    assert difference_of_gaussians(flat).abs().max() < 1e-6
    tiny = torch.full((1, 3, 4, 4), -0.3)  # smaller than the kernel radius: replicate padding
    assert difference_of_gaussians(tiny).abs().max() < 1e-6


def test_dog_responds_to_an_edge_and_laplacian_loss() -> None:
    edge = torch.zeros(1, 3, 16, 16)
    edge[..., 8:] = 1.0
    dog = difference_of_gaussians(edge)
    assert dog.abs().max() > 0.05  # an edge is exactly what the band-pass keeps
    assert dog[..., :, :3].abs().max() < 1e-3  # far from the edge it is flat
    assert laplacian_loss(edge, edge).item() == 0.0
    assert laplacian_loss(edge, edge + 0.5).item() < 1e-6  # a brightness offset has no Laplacian
    assert laplacian_loss(edge, torch.zeros_like(edge)).item() > 0.01


def test_content_and_adversarial_terms() -> None:
    a, b = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.25)
    assert content_loss(a, b).item() == pytest.approx(0.25)
    assert generator_adversarial_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_generator_loss_weights() -> None:
    torch.manual_seed(0)
    scores, fake, target = torch.randn(2, 1, 2, 2), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    _, t = rtdgan_generator_loss(scores, fake, target, 1.0, 1.0, 1.0)
    loss, _ = rtdgan_generator_loss(scores, fake, target, 2.0, 3.0, 5.0)
    assert loss.item() == pytest.approx(2 * t["g_adv"].item() + 3 * t["g_con"].item() + 5 * t["g_lap"].item(), rel=1e-5)
    no_lap, _ = rtdgan_generator_loss(scores, fake, target, 1.0, 1.0, 0.0)
    assert no_lap.item() == pytest.approx(t["g_loss"].item() - t["g_lap"].item(), rel=1e-5)


def test_pix2pix_losses() -> None:
    logits = torch.tensor([[2.0, -1.0]])
    assert bce(logits, True).item() == pytest.approx(F.softplus(-logits).mean().item())
    assert bce(logits, False).item() == pytest.approx(F.softplus(logits).mean().item())
    assert pix2pix_discriminator_loss(logits, True).item() == pytest.approx(0.5 * bce(logits, True).item())
    fake, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)
    loss, terms = pix2pix_generator_loss(logits, fake, target)
    assert loss.item() == pytest.approx(bce(logits, True).item() + PIX2PIX_LAMBDA_L1 * 0.1, rel=1e-5)
    assert terms["g_con"].item() == pytest.approx(0.1)


def test_pldt_losses() -> None:
    # A perfect D_R / D_A (huge logits with the right sign) has ~0 loss; the converter then has a big one.
    big = torch.full((4,), 30.0)
    assert pldt_real_fake_loss(big, True).item() < 1e-6
    assert pldt_real_fake_loss(-big, False).item() < 1e-6
    assert pldt_domain_loss(big, True).item() < 1e-6
    assert pldt_domain_loss(big, False).item() == pytest.approx(30.0 / 3, rel=1e-4)
    loss, terms = pldt_converter_loss(-big, -big)
    assert loss.item() == pytest.approx(30.0, rel=1e-4)
    assert terms["g_real_fake"].item() == pytest.approx(30.0, rel=1e-4)
