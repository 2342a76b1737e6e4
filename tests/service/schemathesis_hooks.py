"""Schemathesis settings for tests/service/test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

The `image` part of every upload is declared `image/*` (service/app.py `strict_openapi`); schemathesis
cannot draw a decodable picture by itself, so this registers a strategy of small real PNG and JPEG photos
for that media type. Everything else (fields, invalid values for the negative checks) it generates.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _photo(seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(8, 48)), int(rng.integers(8, 48)))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8), "RGB").save(buf, fmt)
    return buf.getvalue()


PHOTOS = [_photo(seed, fmt) for seed in range(4) for fmt in ("PNG", "JPEG")]
schemathesis.openapi.media_type("image/*", st.sampled_from(PHOTOS))
