"""A contact sheet of a paired data set: one row per product, its product image then its photos, labelled.

The way to check by eye that the photos read as a person wearing the product (`rtd data sheet`).
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.files import PRODUCTS_CSV, read_products_csv
from rtdgan.index.images import decode_image, letterbox
from rtdgan.training.data import load_records

BACKGROUND = (222, 222, 222)  # grey, so that white product images show their edges
GAP, SEPARATOR = 2, 8  # pixels between cells; after the product column


def _labels(data_dir: Path) -> dict[str, str]:
    """product_id -> "id  category  pattern  colour" from products.csv (the synthetic set writes one)."""
    return {pid: "  ".join(v for v in (pid, row.get("category"), row.get("pattern"), row.get("colour")) if v)
            for pid, row in read_products_csv(data_dir / PRODUCTS_CSV).items()}


def _cell(path: Path, size: int) -> Image.Image:
    """One image letterboxed to size x size; an unreadable file is a grey cell with a cross."""
    try:
        return letterbox(decode_image(path), size)
    except ImageError:
        img = Image.new("RGB", (size, size), (160, 160, 160))
        d = ImageDraw.Draw(img)
        d.line([(0, 0), (size, size)], fill=(200, 0, 0), width=2)
        d.line([(0, size), (size, 0)], fill=(200, 0, 0), width=2)
        return img


def contact_sheet(data_dir: Path, out: Path, products: int = 8, photos: int = 4, size: int = 128) -> Path:
    """Draw the first `products` products of a data folder, each with up to `photos` photos, into a PNG/JPEG."""
    data_dir, out = Path(data_dir), Path(out)
    if products < 1 or photos < 0 or size < 16:
        raise UserError(f"contact sheet needs products >= 1, photos >= 0, size >= 16 (got {products}, {photos}, {size})")
    if out.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"--out {out}: unknown image type {out.suffix!r}; use .png or .jpg")
    if not data_dir.is_dir():
        raise UserError(f"data folder not found: {data_dir}")
    records = load_records(data_dir).records[:products]  # UserError when there are no LookBook pairs
    labels = _labels(data_dir)
    font = ImageFont.load_default(size=max(8, min(14, size // 9)))
    label_h = font.size + 4 if hasattr(font, "size") else 14
    cols = 1 + photos
    width = cols * size + (cols - 1) * GAP + SEPARATOR
    row_h = label_h + size + GAP
    sheet = Image.new("RGB", (width, len(records) * row_h), BACKGROUND)
    d = ImageDraw.Draw(sheet)
    for r, rec in enumerate(records):
        y = r * row_h
        d.text((2, y + 1), labels.get(rec.product_id, f"{rec.product_id}  {rec.category or ''}"), fill=(0, 0, 0),
               font=font)
        for c, path in enumerate((rec.product_image, *rec.photos[:photos])):
            x = c * (size + GAP) + (SEPARATOR if c > 0 else 0)
            sheet.paste(_cell(path, size), (x, y + label_h))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
