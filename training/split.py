"""`rtd data split`: a seeded train/test split by product, then the paper's cleaning (Sec. 4).

Sec. 4: "We use ten percents of clothing images and its associated model images as the test split ...
In the test split, we did data cleaning by removing redundant images that are in both splits."
We split by product (never by photo, so no product is in both splits), then drop every test photo whose
perceptual hash is within `phash_threshold` bits of any train image (photo or product image); a test
product left with no photo is dropped.  Product images are not cleaned against each other: two
products of the same cut and colour legitimately look alike on white (and pHash, which sees only the
grey-level silhouette there, would call them duplicates).  Unreadable files are reported and left out.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rtdgan.index.configs import opt
from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.images import decode_image
from rtdgan.training.data import ProductRecord, load_records, write_split

HASH_SIDE = 32  # pHash: DCT of a 32x32 grayscale thumbnail, keep the 8x8 lowest frequencies -> 64 bits


@dataclass(frozen=True)
class SplitConfig:
    """`rtd data split`: which data, where to write the split, the test fraction, seed and cleaning threshold.

    The flags of `rtd data split` are derived from these fields (training/data_cli.py)."""

    data: Path = opt(help="LookBook folder or pairs manifest CSV")
    out: Path = opt(help="split file to write (JSON)")
    test_fraction: float = opt(0.1, "share of the products in the test split (Sec. 4: ten percent)")
    seed: int = opt(0, "seed of the split")
    # Measured on the synthetic set: re-encoding + resizing a photo moves it <= 6 bits; the closest
    # distinct photos are >= 8 bits apart (docs/design-choices.md, Data).
    phash_threshold: int = opt(6, "Hamming distance (bits of 64) at or below which a test photo counts as a "
                                  "copy of a train image")
    workers: int = opt(1, "processes that hash the images")


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(HASH_SIDE)


def phash(path: Path) -> int:
    """64-bit perceptual hash (DCT pHash) of an image file; raises ImageError if it cannot be read."""
    img = decode_image(path, draft=4 * HASH_SIDE)  # JPEG draft mode: decode at 1/2..1/8 scale, much faster
    gray = np.asarray(img.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX), dtype=np.float64)
    freq = (_DCT @ gray @ _DCT.T)[:8, :8].ravel()
    bits = freq > np.median(freq[1:])  # the DC term is left out of the median: it is just the brightness
    return int(np.packbits(bits).view(">u8")[0])


def _hash_or_error(path: Path) -> int | str:
    try:
        return phash(path)
    except ImageError as e:
        return str(e)


def hamming_min(queries: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """For each query hash, the smallest Hamming distance to any reference hash (uint64 arrays)."""
    out = np.full(len(queries), 64, dtype=np.int64)
    if len(refs) == 0:
        return out
    for start in range(0, len(queries), 256):  # chunks keep the (q, r) matrix small
        x = queries[start:start + 256, None] ^ refs[None, :]
        out[start:start + 256] = np.bitwise_count(x).min(axis=1)
    return out


def split_products(product_ids: list[str], test_fraction: float, seed: int) -> tuple[set[str], set[str]]:
    """Seeded split of product ids: at least one product on each side when there are two or more."""
    ids = sorted(product_ids)
    random.Random(seed).shuffle(ids)
    n_test = round(len(ids) * test_fraction)
    n_test = min(max(n_test, 1 if test_fraction > 0 else 0), len(ids) - 1)
    return set(ids[n_test:]), set(ids[:n_test])


def make_split(cfg: SplitConfig) -> dict:
    """Split, clean, write the split file; return its header (counts and what was dropped)."""
    if not 0.0 < cfg.test_fraction < 1.0:
        raise UserError(f"--test-fraction must be between 0 and 1 (exclusive), got {cfg.test_fraction}")
    if not 0 <= cfg.phash_threshold <= 64:
        raise UserError(f"--phash-threshold must be between 0 and 64 bits, got {cfg.phash_threshold}")
    if cfg.workers < 1:
        raise UserError(f"--workers must be at least 1, got {cfg.workers}")
    scan = load_records(cfg.data)
    if len(scan.records) < 2:
        raise UserError(f"{cfg.data}: need at least 2 products to split, found {len(scan.records)}")

    # Hash every image once; unreadable files are reported and left out.
    paths = sorted({p for r in scan.records for p in (r.product_image, *r.photos)})
    if cfg.workers > 1:
        with ProcessPoolExecutor(cfg.workers) as pool:
            results = list(tqdm(pool.map(_hash_or_error, paths, chunksize=64), total=len(paths),
                                desc="hashing", unit="img", disable=None))
    else:
        results = [_hash_or_error(p) for p in tqdm(paths, desc="hashing", unit="img", disable=None)]
    hashes = {p: h for p, h in zip(paths, results, strict=True) if isinstance(h, int)}
    skipped = list(scan.skipped) + [f"unreadable: {p.name}: {h}" for p, h in zip(paths, results, strict=True)
                                    if isinstance(h, str)]
    records: list[ProductRecord] = []
    for r in scan.records:
        photos = tuple(p for p in r.photos if p in hashes)
        if r.product_image not in hashes:
            skipped.append(f"product {r.product_id}: product image unreadable; product left out")
        elif not photos:
            skipped.append(f"product {r.product_id}: no readable photo; product left out")
        else:
            records.append(replace(r, photos=photos))
    if len(records) < 2:
        raise UserError(f"{cfg.data}: fewer than 2 products with readable images ({len(skipped)} problem(s), "
                        f"first: {skipped[0] if skipped else 'none'})")

    train_ids, test_ids = split_products([r.product_id for r in records], cfg.test_fraction, cfg.seed)
    train = [r for r in records if r.product_id in train_ids]
    test = [r for r in records if r.product_id in test_ids]

    # The paper's cleaning: drop test images that duplicate any train image.
    train_hashes = np.array([hashes[p] for r in train for p in (r.product_image, *r.photos)], dtype=np.uint64)
    dropped: list[dict] = []
    clean_test: list[ProductRecord] = []
    for r in test:
        d = hamming_min(np.array([hashes[p] for p in r.photos], dtype=np.uint64), train_hashes)
        keep = tuple(p for p, dist in zip(r.photos, d, strict=True) if dist > cfg.phash_threshold)
        dropped += [{"image": p.name, "product_id": r.product_id, "hamming": int(dist),
                     "reason": "test photo duplicates a train image"}
                    for p, dist in zip(r.photos, d, strict=True) if dist <= cfg.phash_threshold]
        if keep:
            clean_test.append(replace(r, photos=keep))
        else:
            dropped.append({"image": r.product_image.name, "product_id": r.product_id, "hamming": None,
                            "reason": "every test photo was a duplicate; product dropped"})

    info = {
        "data": str(Path(cfg.data).resolve()),
        "seed": cfg.seed,
        "test_fraction": cfg.test_fraction,
        "phash_threshold": cfg.phash_threshold,
        "counts": {
            "train": {"products": len(train), "photos": sum(len(r.photos) for r in train)},
            "test": {"products": len(clean_test), "photos": sum(len(r.photos) for r in clean_test)},
        },
        "dropped": dropped,
        "skipped": skipped,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    write_split(Path(cfg.out), info, train, clean_test)
    return info
