"""The paper's evaluation metrics (Sec. 5): RMSE, SSIM, and Recall@K. numpy + scikit-image, no torch.

Images come in as the pipeline holds them, float (3, S, S) in [-1, 1], and are moved to [0, 1] first, so
RMSE lies in [0, 1] as the paper states ("from 0 (the same) to 1").
  RMSE    per image over all pixels and channels, then averaged over images.
  SSIM    Wang et al. 2004 on grayscale ("we convert RGB images to grayscale", Sec. 5): ITU-R BT.601 luma
          Y = 0.299 R + 0.587 G + 0.114 B, then scikit-image's structural_similarity with the paper's
          constants: 11x11 Gaussian window, sigma 1.5, population covariance, data range 1.
  Recall@K the fraction of queries whose true product is among the top K of the gallery by cosine, with a
          percentile bootstrap interval that resamples products (`bootstrap_recall`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.metrics import structural_similarity

LUMA_601 = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601, as PIL's convert("L")


def to_unit(image: np.ndarray) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> float64 in [0, 1] (clipped)."""
    return np.clip((np.asarray(image, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)


def rmse(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image RMSE of two (B, 3, H, W) batches in [-1, 1], on the [0, 1] scale: (B,)."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two (B, 3, H, W) batches of one shape, got {a.shape} and {b.shape}")
    diff = to_unit(a) - to_unit(b)  # (B, 3, H, W)
    return np.sqrt((diff**2).mean(axis=(1, 2, 3)))


def grayscale(image: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W) BT.601 luma in [0, 1]."""
    return np.tensordot(LUMA_601, to_unit(image), axes=(0, 0))  # (H, W)


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image grayscale SSIM of two (B, 3, H, W) batches in [-1, 1]: (B,); H, W >= 11."""
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"need two (B, 3, H, W) batches of one shape, got {a.shape} and {b.shape}")
    return np.array([
        structural_similarity(grayscale(x), grayscale(y), gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=1.0)
        for x, y in zip(a, b, strict=True)
    ])


def true_ranks(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of each query's true gallery item: scores (Q, P), truth (Q,) indices -> (Q,).

    Ties count against the query (rank = 1 + other items scoring at least as high), so a degenerate
    embedding that scores everything alike gets no credit.
    """
    scores = np.asarray(scores)
    truth = np.asarray(truth, dtype=np.int64)
    if scores.ndim != 2 or truth.shape != (len(scores),):
        raise ValueError(f"need scores (Q, P) and truth (Q,), got {scores.shape} and {truth.shape}")
    own = scores[np.arange(len(scores)), truth][:, None]  # (Q, 1)
    ranks = (scores >= own).sum(axis=1)  # the item itself counts once: rank 1 when nothing ties or beats it
    return np.where(np.isnan(own[:, 0]), scores.shape[1], ranks)  # a NaN score is last, never a hit


def recall_at_k(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K for each K: the fraction of ranks <= K."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        raise ValueError("no queries")
    return {int(k): float((ranks <= k).mean()) for k in ks}


def bootstrap_recall(ranks: np.ndarray, owners: np.ndarray, ks: Sequence[int], n: int = 1000, seed: int = 0,
                     level: float = 0.95) -> dict[int, tuple[float, float, float]]:
    """Recall@K for each K with a percentile bootstrap interval: {K: (recall, low, high)}.

    The unit resampled is the product (`owners` (Q,): each query's true product), not the query: a product's
    photos share its image and look alike, so they are not independent, and resampling them one by one would
    give intervals too narrow. Each of the `n` resamples draws as many products as there are, with replacement,
    and takes all their queries; the interval is the central `level` of the resampled recalls. `recall` is the
    recall over all queries (as `recall_at_k`), not the resamples' mean. Seeded: the same inputs and seed give
    the same interval.
    """
    ranks, owners = np.asarray(ranks), np.asarray(owners)
    if ranks.ndim != 1 or owners.shape != ranks.shape:
        raise ValueError(f"need ranks (Q,) and owners (Q,), got {ranks.shape} and {owners.shape}")
    if n < 1 or not 0 < level < 1:
        raise ValueError(f"need n >= 1 and 0 < level < 1, got {n} and {level}")
    point = recall_at_k(ranks, ks)  # raises on no queries
    ks = [int(k) for k in ks]
    _, group = np.unique(owners, return_inverse=True)  # (Q,) product number 0..G-1
    G = int(group.max()) + 1
    queries = np.bincount(group, minlength=G).astype(np.float64)  # (G,) queries per product
    hits = np.stack([np.bincount(group, weights=ranks <= k, minlength=G) for k in ks], axis=1)  # (G, K)
    rng = np.random.default_rng(seed)
    samples = []
    for first in range(0, n, 100):  # (chunk, G) counts at a time: bounded memory for large galleries
        counts = rng.multinomial(G, np.full(G, 1.0 / G), size=min(100, n - first)).astype(np.float64)
        samples.append((counts @ hits) / (counts @ queries)[:, None])  # (chunk, K)
    resampled = np.concatenate(samples)  # (n, K)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(resampled, [tail, 100.0 - tail], axis=0)  # (K,) each
    return {k: (point[k], float(low[i]), float(high[i])) for i, k in enumerate(ks)}
