"""RMSE, SSIM, Recall@K and its bootstrap interval (training/metrics.py) against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from rtdgan.training.metrics import bootstrap_recall, grayscale, recall_at_k, rmse, ssim, true_ranks


def images(rng: np.random.Generator, n: int = 3, size: int = 16) -> np.ndarray:
    """(n, 3, size, size) float32 in [-1, 1]."""
    return rng.uniform(-1, 1, (n, 3, size, size)).astype(np.float32)


def test_identical_images_have_rmse_0_and_ssim_1() -> None:
    x = images(np.random.default_rng(0))
    assert np.allclose(rmse(x, x), 0.0)
    assert np.allclose(ssim(x, x), 1.0)


def test_rmse_is_on_the_unit_scale() -> None:
    black, white = -np.ones((1, 3, 16, 16)), np.ones((1, 3, 16, 16))  # 0 and 1 on the [0, 1] scale
    assert rmse(black, white)[0] == pytest.approx(1.0)
    half = black.copy()
    half[..., :8] = 0.0  # half the pixels at 0.5 on the [0, 1] scale, off by 0.5
    assert rmse(black, half)[0] == pytest.approx(math.sqrt(0.125))


def test_rmse_is_per_image_then_averaged() -> None:
    a = -np.ones((2, 3, 16, 16))
    b = np.stack([-np.ones((3, 16, 16)), np.ones((3, 16, 16))])  # image errors 0 and 1
    per_image = rmse(a, b)
    assert per_image.tolist() == pytest.approx([0.0, 1.0])
    assert per_image.mean() == pytest.approx(0.5)  # a pooled RMSE would give sqrt(0.5) instead


def test_ssim_is_scikit_image_on_bt601_luma() -> None:
    rng = np.random.default_rng(1)
    a, b = images(rng, 2, 24), images(rng, 2, 24)
    b = np.clip(0.7 * a + 0.3 * b, -1, 1)  # related but different
    luma = lambda x: 0.299 * (x[0] + 1) / 2 + 0.587 * (x[1] + 1) / 2 + 0.114 * (x[2] + 1) / 2  # noqa: E731
    expected = [structural_similarity(luma(x), luma(y), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=1.0) for x, y in zip(a, b, strict=True)]
    got = ssim(a, b)
    assert got.tolist() == pytest.approx(expected)
    assert np.all(got < 0.99)
    # Grayscale: an image and its luma-preserving colour twin are structurally identical.
    gray = grayscale(a[0])
    twin = np.repeat(gray[None] * 2 - 1, 3, axis=0)
    assert ssim(a[:1], twin[None])[0] == pytest.approx(1.0, abs=1e-6)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        rmse(np.zeros((1, 3, 8, 8)), np.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError):
        ssim(np.zeros((3, 16, 16)), np.zeros((3, 16, 16)))


def test_true_ranks_and_recall_against_a_hand_built_ranking() -> None:
    scores = np.array([
        [0.9, 0.1, 0.2, 0.3],  # truth 0: best -> rank 1
        [0.5, 0.4, 0.6, 0.1],  # truth 1: 0.5 and 0.6 beat it -> rank 3
        [0.7, 0.7, 0.2, 0.1],  # truth 1: tied with item 0 -> ties count against the query: rank 2
        [0.1, 0.2, 0.3, 0.0],  # truth 3: last -> rank 4
        [np.nan, 0.2, 0.3, 0.1],  # truth 0 scored NaN: never a hit, ranked last
    ])
    ranks = true_ranks(scores, np.array([0, 1, 1, 3, 0]))
    assert ranks.tolist() == [1, 3, 2, 4, 4]
    recall = recall_at_k(ranks, (1, 2, 3, 4))
    assert recall == pytest.approx({1: 1 / 5, 2: 2 / 5, 3: 3 / 5, 4: 1.0})


def test_recall_needs_queries() -> None:
    with pytest.raises(ValueError):
        recall_at_k(np.array([]), (1,))


def half_hit(products: int, photos: int) -> tuple[np.ndarray, np.ndarray]:
    """(ranks, owners): the first half of the products are found first by every photo, the rest never (rank 50)."""
    owners = np.repeat(np.arange(products), photos)
    return np.where(owners < products // 2, 1, 50), owners


def test_bootstrap_interval_on_hand_built_cases() -> None:
    # Every query a hit: every resample scores 1.
    assert bootstrap_recall(np.ones(6), np.array([0, 0, 1, 1, 2, 2]), (1, 5)) == {1: (1.0, 1.0, 1.0), 5: (1.0, 1.0, 1.0)}
    # Two products, one always hit, one never: a resample holds both (1/2), or twice the one (1/4 each):
    # the central 95 % spans [0, 1].
    assert bootstrap_recall(np.array([1, 9]), np.array([7, 3]), (1,)) == {1: (0.5, 0.0, 1.0)}
    # Half the products always hit: the interval holds 0.5 and narrows with more products, about as a
    # binomial proportion over products would (1.96 * sqrt(0.25 / G) each side).
    widths = []
    for products in (10, 40, 160):
        (value, lo, hi), = bootstrap_recall(*half_hit(products, 3), (1,)).values()
        assert value == 0.5 and lo < 0.5 < hi
        assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / products), rel=0.3)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # The unit is the product: three look-alike photos per product are not three times the evidence (the same
    # seed draws the same products, so the interval is the same as with one photo each).
    assert bootstrap_recall(*half_hit(10, 3), (1,)) == bootstrap_recall(*half_hit(10, 1), (1,))


def test_bootstrap_is_seeded_and_its_value_is_the_plain_recall() -> None:
    rng = np.random.default_rng(3)
    owners = np.repeat(np.arange(30), 4)
    ranks = rng.integers(1, 40, len(owners))
    a = bootstrap_recall(ranks, owners, (1, 5, 10, 20, 60), n=300, seed=7)
    assert a == bootstrap_recall(ranks, owners, (1, 5, 10, 20, 60), n=300, seed=7)
    assert {k: v for k, (v, _, _) in a.items()} == recall_at_k(ranks, (1, 5, 10, 20, 60))
    assert all(lo <= v <= hi for v, lo, hi in a.values())
    assert a[60] == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        bootstrap_recall(ranks, owners[:-1], (1,))
    with pytest.raises(ValueError):
        bootstrap_recall(np.array([]), np.array([]), (1,))
