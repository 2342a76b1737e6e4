"""The pix2pix (Isola et al. 2017) and PLDT (Yoo et al. 2016) baselines: shapes, dropout, config checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rtdgan.models.pix2pix import PatchDiscriminator, Pix2PixConfig, UNetGenerator
from rtdgan.models.pldt import PLDTConfig, PLDTConverter, PLDTDomainDiscriminator, PLDTRealFakeDiscriminator

# ---- pix2pix -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [32, 64])
def test_unet_shape_range_and_depth(resolution: int, photos) -> None:
    G = UNetGenerator(Pix2PixConfig(resolution=resolution, width=4))
    y = G(photos(2, resolution))
    assert y.shape == (2, 3, resolution, resolution)
    assert y.abs().max() <= 1.0
    assert len(G.downs) == len(G.ups) == resolution.bit_length() - 1  # log2(S) blocks: 1x1 bottleneck


def test_unet_256_layout_matches_pix2pix() -> None:
    G = UNetGenerator(Pix2PixConfig(resolution=256, width=4))
    assert len(G.downs) == 8
    dropouts = [u for u, up in enumerate(G.ups) if any(isinstance(m, nn.Dropout) for m in up.modules())]
    assert dropouts == [1, 2, 3]  # the three 8w blocks outside the innermost, as in unet_256
    convs = [m for m in G.downs.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8, 16, 32, 32, 32, 32, 32]  # ngf .. 8 ngf, capped


def test_unet_eval_is_deterministic_and_train_is_not(photos) -> None:
    G = UNetGenerator(Pix2PixConfig(resolution=32, width=4, dropout=0.5))
    x = photos(2, 32)
    with torch.no_grad():
        G.eval()
        assert torch.equal(G(x), G(x))
        G.train()
        assert not torch.allclose(G(x), G(x))


def test_unet_dropout_zero_turns_dropout_off(photos) -> None:
    G = UNetGenerator(Pix2PixConfig(resolution=32, width=4, dropout=0.0)).train()
    assert not any(isinstance(m, nn.Dropout) for m in G.modules())
    x = photos(2, 32)
    with torch.no_grad():
        assert torch.equal(G(x), G(x))


@pytest.mark.parametrize(("resolution", "patches"), [(32, 2), (64, 6)])
def test_patch_discriminator_shape(resolution: int, patches: int, photos) -> None:
    D = PatchDiscriminator(Pix2PixConfig(resolution=resolution, width=4))
    logits = D(photos(2, resolution), photos(2, resolution))
    assert logits.shape == (2, 1, patches, patches)  # 30 x 30 at 256 px, as the 70x70 PatchGAN
    assert any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
    assert next(m for m in D.modules() if isinstance(m, nn.Conv2d)).in_channels == 6  # conditional


def test_pix2pix_refuses_bad_configs(photos) -> None:
    for resolution in (16, 48):
        with pytest.raises(ValueError, match="power of two >= 32"):
            UNetGenerator(Pix2PixConfig(resolution=resolution, width=4))
        with pytest.raises(ValueError, match="power of two >= 32"):
            PatchDiscriminator(Pix2PixConfig(resolution=resolution, width=4))
    with pytest.raises(ValueError, match="dropout"):
        UNetGenerator(Pix2PixConfig(resolution=32, width=4, dropout=1.0))
    with pytest.raises(ValueError, match="photo must be"):
        UNetGenerator(Pix2PixConfig(resolution=32, width=4))(photos(1, 64))


# ---- PLDT ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_pldt_shapes(resolution: int, photos) -> None:
    cfg = PLDTConfig(resolution=resolution, width=4, code_dim=8)
    converter = PLDTConverter(cfg)
    image = converter(photos(2, resolution))
    assert image.shape == (2, 3, resolution, resolution)
    assert image.abs().max() <= 1.0
    assert PLDTRealFakeDiscriminator(cfg)(image).shape == (2,)
    assert PLDTDomainDiscriminator(cfg)(photos(2, resolution), image).shape == (2,)


def test_pldt_code_is_1x1_and_code_dim_is_wired(photos) -> None:
    converter = PLDTConverter(PLDTConfig(resolution=32, width=4, code_dim=7))
    code = converter.encoder(photos(2, 32))
    assert code.shape == (2, 7, 1, 1)  # no skip connections: everything passes the code (PLDT)
    assert any(isinstance(m, nn.BatchNorm2d) for m in converter.modules())  # DCGAN-style batch norm


def test_pldt_shrinks_larger_inputs_to_its_resolution(photos) -> None:
    cfg = PLDTConfig(resolution=16, width=4)
    converter = PLDTConverter(cfg).eval()
    big = photos(2, 64)
    small = torch.nn.functional.avg_pool2d(big, 4)
    with torch.no_grad():
        assert converter(big).shape == (2, 3, 16, 16)
        assert torch.allclose(converter(big), converter(small), atol=1e-6)
        d_a = PLDTDomainDiscriminator(cfg).eval()
        assert torch.allclose(d_a(big, big), d_a(small, small), atol=1e-6)
    with pytest.raises(ValueError, match="cannot shrink"):
        converter(photos(1, 24))


def test_pldt_domain_discriminator_sees_the_pair(photos) -> None:
    d_a = PLDTDomainDiscriminator(PLDTConfig(resolution=16, width=4)).eval()
    photo, image = photos(2, 16), photos(2, 16)
    with torch.no_grad():
        assert not torch.allclose(d_a(photo, image), d_a(photos(2, 16), image))  # depends on the photo
        assert not torch.allclose(d_a(photo, image), d_a(photo, photos(2, 16)))  # and on the image


def test_pldt_refuses_bad_resolution() -> None:
    with pytest.raises(ValueError, match="power of two"):
        PLDTConverter(PLDTConfig(resolution=48))
    with pytest.raises(ValueError, match="code_dim"):
        PLDTConverter(PLDTConfig(resolution=16, code_dim=0))
