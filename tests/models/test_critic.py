"""The shared conditional PatchGAN critic: every stage size, no batch coupling, gradient penalty ready."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtdgan.models.critic import ConditionalPatchCritic, CriticConfig
from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_patch_map_at_every_stage_size(size: int, photos) -> None:
    D = ConditionalPatchCritic(CriticConfig(width=4, layers=3))
    scores = D(photos(2, size), photos(2, size))
    assert scores.shape == (2, 1, size // 8, size // 8)  # one score at 8 px, never empty
    assert torch.isfinite(scores).all()


def test_layers_and_width_are_wired(photos) -> None:
    D = ConditionalPatchCritic(CriticConfig(width=5, layers=2))
    assert D.min_size == 4
    assert D(photos(1, 4), photos(1, 4)).shape == (1, 1, 1, 1)
    assert D(photos(1, 32), photos(1, 32)).shape == (1, 1, 8, 8)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 + 2  # two strided convs, then the two 3x3 stride-1 convs
    assert [c.out_channels for c in convs] == [5, 10, 20, 1]
    assert convs[0].in_channels == 6  # conditional: photo and image concatenated (Eq. 1)


def test_scores_are_unbounded_logits_not_probabilities(photos) -> None:
    D = ConditionalPatchCritic(CriticConfig(width=4))
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(30.0)
    scores = D(photos(4, 16), photos(4, 16))
    assert scores.abs().max() > 1.0  # no sigmoid / tanh at the end: a Wasserstein critic


def test_no_normalisation_layers() -> None:
    D = ConditionalPatchCritic(CriticConfig())
    norms = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)
    assert not any(isinstance(m, norms) for m in D.modules())


def test_each_score_depends_only_on_its_own_sample(photos) -> None:
    # The WGAN-GP penalty assumes per-sample critics: changing sample 1 must not move sample 0's score.
    D = ConditionalPatchCritic(CriticConfig(width=4)).train()
    photo, image = photos(3, 16), photos(3, 16)
    before = D(photo, image)
    image2 = image.clone()
    image2[1:] = photos(2, 16)
    after = D(photo, image2)
    assert torch.equal(after[0], before[0])
    assert not torch.allclose(after[1:], before[1:])


def test_gradient_penalty_double_backward_reaches_the_weights(photos) -> None:
    D = ConditionalPatchCritic(CriticConfig(width=4))
    photo = photos(2, 16)
    mixed = photos(2, 16).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(photo, mixed).sum(), mixed, create_graph=True)
    penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
    penalty.backward()
    # Every conv weight shapes d score / d input; biases do not all (the last one is a constant shift).
    weights = [p for name, p in D.named_parameters() if name.endswith("weight")]
    assert len(weights) == 5
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)


def test_one_critic_scores_every_generator_stage(photos) -> None:
    G = ProgressiveGenerator(GeneratorConfig(resolution=32, stages=3, width=4, max_width=16))
    D = ConditionalPatchCritic(CriticConfig(width=4))
    photo = photos(2, 32)
    for stage in (1, 2, 3):
        fake = G(photo, stage, 0.5)
        photo_i = F.interpolate(photo, size=fake.shape[-1], mode="area")  # x_i of Eq. 1
        s = G.output_size(stage)
        assert D(photo_i, fake).shape == (2, 1, s // 8, s // 8)


def test_bad_inputs_are_refused(photos) -> None:
    D = ConditionalPatchCritic(CriticConfig(width=4))
    with pytest.raises(ValueError, match="same shape"):
        D(photos(1, 16), photos(1, 8))
    with pytest.raises(ValueError, match="multiple of 8"):
        D(photos(1, 4), photos(1, 4))
    with pytest.raises(ValueError, match="layers"):
        ConditionalPatchCritic(CriticConfig(layers=0))
