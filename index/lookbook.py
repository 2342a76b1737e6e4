"""The LookBook file-name layout (Yoo et al. 2016), shared by the data readers and the index build.

`PID%06d_CLEAN1_IID%06d.jpg` is a product image, `PID%06d_CLEAN0_IID%06d.jpg` a photo of a person
wearing it. Lives in `index/` so that the torch-free side can read it without importing `training/`.
"""

from __future__ import annotations

import re

LOOKBOOK_RE = re.compile(r"^PID(\d{6})_CLEAN([01])_IID(\d{6})\.(jpe?g|png|webp)$", re.IGNORECASE)


def lookbook_product_id(name: str) -> str | None:
    """The six-digit product id if `name` is a LookBook product image (CLEAN1), else None."""
    m = LOOKBOOK_RE.match(name)
    return m.group(1) if m and m.group(2) == "1" else None


def is_street_photo(name: str) -> bool:
    """True if `name` is a LookBook street photo (CLEAN0: a person wearing the product)."""
    m = LOOKBOOK_RE.match(name)
    return bool(m and m.group(2) == "0")
