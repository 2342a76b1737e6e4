"""The progressive generator: stage sizes, fade-in, gradients, tracing, config checks (Sec. 3.1, 3.3, Fig. 2)."""

from __future__ import annotations

import warnings

import pytest
import torch

from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator, max_stages

# (S, N): every N from 1 to the maximum at 32 px, and the maximum at 64 px.
SHAPE_CASES = [(32, 1), (32, 2), (32, 3), (64, 3), (64, 4)]


def tiny(resolution: int = 32, stages: int = 3, width: int = 4, max_width: int = 16) -> ProgressiveGenerator:
    return ProgressiveGenerator(GeneratorConfig(resolution, stages, width, max_width))


def test_max_stages_keeps_the_coarsest_stage_at_8px() -> None:
    assert [max_stages(s) for s in (16, 32, 64, 256, 1024)] == [2, 3, 4, 6, 8]
    for s in (16, 32, 64, 256):
        assert s // 2 ** (max_stages(s) - 1) == 8


@pytest.mark.parametrize("resolution", [8, 24, 48, 100, 0, -32])
def test_non_power_of_two_or_tiny_resolution_is_refused(resolution: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        max_stages(resolution)
    with pytest.raises(ValueError, match="power of two"):
        ProgressiveGenerator(GeneratorConfig(resolution=resolution, stages=1, width=4))


@pytest.mark.parametrize("stages", [0, 4, 7])
def test_too_many_or_too_few_stages_is_refused(stages: int) -> None:
    with pytest.raises(ValueError, match=r"stages must be between 1 and 3 at resolution 32"):
        tiny(32, stages)


@pytest.mark.parametrize(("resolution", "stages"), SHAPE_CASES)
def test_output_shape_and_range_at_every_stage(resolution: int, stages: int, photos) -> None:
    G = tiny(resolution, stages)
    x = photos(2, resolution)
    for stage in range(1, stages + 1):
        size = resolution // 2 ** (stages - stage)
        assert G.output_size(stage) == size
        assert G.active_blocks(stage) == G.depth - stages + stage
        for alpha in (0.0, 0.5, 1.0):
            y = G(x, stage, alpha)
            assert y.shape == (2, 3, size, size)
            assert y.abs().max() <= 1.0
    assert G(x).shape == (2, 3, resolution, resolution)
    assert torch.equal(G(x), G(x, stages, 1.0))  # stage None is the final generator G_N


def test_output_is_tanh_bounded_even_when_saturated(photos) -> None:
    G = tiny(32, 3)
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(50.0)  # push every pre-tanh value far outside [-1, 1]
    x = photos(2, 32)
    for stage in (1, 2, 3):
        y = G(x, stage)
        assert y.abs().max() <= 1.0
        assert y.abs().max() > 0.99  # the bound comes from the tanh, not from small weights


def test_bottleneck_is_1x1_and_widths_follow_the_config() -> None:
    G = ProgressiveGenerator(GeneratorConfig(resolution=64, stages=2, width=4, max_width=12))
    x = torch.zeros(1, 3, 64, 64)
    sizes, channels = [], []
    for block in G.encoder:
        x = block(x)
        sizes.append(x.shape[-1])
        channels.append(x.shape[1])
    assert sizes == [32, 16, 8, 4, 2, 1]  # M = log2(64) = 6 stride-2 blocks down to 1x1
    assert channels == [4, 8, 12, 12, 12, 12]  # width, 2 * width, then capped at max_width
    assert len(G.decoder) == 6 and len(G.to_rgb) == 1  # M decoder blocks, a ToRGB for all stages but N


@pytest.mark.parametrize(("stages", "stage"), [(3, 1), (3, 2), (3, 3), (1, 1)])
def test_alpha_zero_ignores_the_new_blocks_detail_flow(stages: int, stage: int, photos) -> None:
    G = tiny(32, stages)
    x = photos(2, 32)
    newest = G.decoder[G.active_blocks(stage) - 1]
    with torch.no_grad():
        at0, at1 = G(x, stage, 0.0), G(x, stage, 1.0)
        assert not torch.allclose(at0, at1, atol=1e-4)  # fading really changes the output
        for p in newest.detail.parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(G(x, stage, 0.0), at0)  # alpha = 0: skip flow only (Fig. 2b)
        assert not torch.allclose(G(x, stage, 1.0), at1, atol=1e-4)


def test_alpha_only_fades_the_newest_block(photos) -> None:
    G = tiny(32, 3)
    x = photos(2, 32)
    with torch.no_grad():
        before = G(x, 2, 0.0)
        for p in G.decoder[G.active_blocks(2) - 2].detail.parameters():  # the block below the newest
            p.add_(torch.randn_like(p))
        assert not torch.allclose(G(x, 2, 0.0), before, atol=1e-4)


def test_every_final_generator_parameter_gets_a_gradient_at_stage_n(photos) -> None:
    G = tiny(32, 3)
    G(photos(2, 32), 3, 1.0).square().mean().backward()
    to_rgb = {id(p) for p in G.to_rgb.parameters()}  # not part of G_N (Sec. 4.1)
    for name, p in G.named_parameters():
        if id(p) in to_rgb:
            assert p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_blocks_not_yet_added_get_no_gradient_at_stage_1(photos) -> None:
    G = tiny(32, 3)
    G(photos(2, 32), 1, 0.5).square().mean().backward()
    active = G.active_blocks(1)  # M - N + 1 = 3
    assert active == 3
    for k, block in enumerate(G.decoder, start=1):
        for p in block.parameters():
            assert (p.grad is not None and p.grad.abs().sum() > 0) == (k <= active)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in G.to_rgb[0].parameters())
    assert all(p.grad is None for p in G.to_rgb[1].parameters())
    # The encoder never grows: it is complete and trained from stage 1 on (Sec. 3.1).
    assert all(p.grad is not None for p in G.encoder.parameters())


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_traced_generator_matches_eager(stage: int, photos) -> None:
    G = tiny(32, 3).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace is deprecated, still what we test
        warnings.simplefilter("error", torch.jit.TracerWarning)  # a trace that may be wrong fails here
        traced = torch.jit.trace(G.at_stage(stage), photos(2, 32))
    x = photos(3, 32)  # another batch size: the trace must not bake the batch in
    with torch.no_grad():
        assert torch.allclose(traced(x), G(x, stage, 1.0), atol=1e-6)


def test_torch_export_with_a_dynamic_batch_matches_eager(photos) -> None:
    # torch.export is what torch.onnx.export(dynamo=True) runs first: the final generator must go through.
    G = tiny(32, 3).eval()
    batch = torch.export.Dim("batch")
    exported = torch.export.export(G.at_stage(), (photos(2, 32),), dynamic_shapes={"photo": {0: batch}})
    x = photos(3, 32)
    with torch.no_grad():
        assert torch.allclose(exported.module()(x), G(x), atol=1e-6)


def test_bad_forward_arguments_are_refused(photos) -> None:
    G = tiny(32, 3)
    x = photos(1, 32)
    for stage in (0, 4):
        with pytest.raises(ValueError, match="stage must be"):
            G(x, stage)
    with pytest.raises(ValueError, match="alpha"):
        G(x, 2, 1.5)
    with pytest.raises(ValueError, match=r"photo must be \(B, 3, 32, 32\)"):
        G(photos(1, 16))
    with pytest.raises(ValueError, match="stage must be"):
        G.at_stage(5)
