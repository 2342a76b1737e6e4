"""The torch view of paired data: (photo, product) tensors through the shared preprocessing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.images import preprocess
from rtdgan.training.data import ProductRecord

log = logging.getLogger(__name__)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip((a + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)


class PairDataset(Dataset):
    """One item per photo: `(photo, product)`, float32 (3, S, S) in [-1, 1].

    A file that fails to decode is reported once (logged and listed in `bad_files`) and the item is
    replaced by the next readable one, so a data set with a few corrupt files still trains.
    With `preload`, every image is decoded once up front and kept as uint8 (small sizes: fast epochs).
    """

    def __init__(self, records: Sequence[ProductRecord], size: int, preload: bool = False) -> None:
        if not records:
            raise UserError("no products to train on (empty split?)")
        self.size = size
        self.records = list(records)
        self.items: list[tuple[Path, int]] = [(photo, i) for i, r in enumerate(self.records) for photo in r.photos]
        self.bad_files: dict[Path, str] = {}
        self._cache: dict[Path, np.ndarray] | None = None
        if preload:
            self._cache = {}
            for path in {p for r in self.records for p in (r.product_image, *r.photos)}:
                a = self._decode(path)
                if a is not None:
                    self._cache[path] = _to_uint8(a)

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, path: Path) -> np.ndarray | None:
        if self._cache is not None:
            u8 = self._cache.get(path)
            return None if u8 is None else u8.astype(np.float32) / 127.5 - 1.0
        return None if path in self.bad_files else self._decode(path)

    def _decode(self, path: Path) -> np.ndarray | None:
        try:
            return preprocess(path, self.size)
        except ImageError as e:
            self.bad_files[path] = str(e)
            log.warning("skipping unreadable training image %s: %s", path, e)
            return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        for offset in range(len(self.items)):
            photo_path, r = self.items[(index + offset) % len(self.items)]
            photo = self._read(photo_path)
            product = self._read(self.records[r].product_image) if photo is not None else None
            if photo is not None and product is not None:
                return torch.from_numpy(photo), torch.from_numpy(product)
        raise UserError(f"none of the {len(self.items)} training photos could be read")
