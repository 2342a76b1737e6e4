"""The one preprocessing function, shared by training, evaluation, index build and the service.

decode -> EXIF orientation -> RGB (alpha composited on white) -> letterbox to a square on white
-> resize to S -> float32 (3, S, S) in [-1, 1].  Pure PIL + numpy: the service imports this without torch.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rtdgan.index.errors import ImageError, UserError

# A decompression bomb is refused before it is decoded: 40 Mpx is a 6300 x 6300 photo, far above a phone's.
DEFAULT_MAX_PIXELS = 40_000_000
# A shape no photo of a garment has (a 20000 x 2 PNG is 205 bytes and 40 kpx): refused with a reason.
MAX_ASPECT = 1000
# Large images are box-reduced by an integer factor as they are decoded, keeping the longer side at least
# REDUCE_GAP x the target size (PIL's `reducing_gap` idea); LANCZOS does the final antialiased resize. Memory
# then never exceeds the decoded image plus a small copy: padding happens only after the reduction.
REDUCE_GAP = 3
WHITE = (255, 255, 255)
# The comparison scale's floor (models/embedders.py, `--embed-level`): below 8 px a garment is a few blobs.
MIN_LEVEL_SIDE = 8
Source = bytes | str | Path | Image.Image


def _open(source: bytes | str | Path) -> Image.Image:
    """Open without decoding pixels; only the header is read here."""
    try:
        if isinstance(source, bytes):
            if not source:
                raise ImageError("empty upload: no image bytes")
            return Image.open(io.BytesIO(source))
        return Image.open(Path(source))
    except FileNotFoundError as e:
        raise ImageError(f"no such image file: {source}", status=404, code="not_found") from e
    except IsADirectoryError as e:
        raise ImageError(f"not an image file but a folder: {source}") from e
    except UnidentifiedImageError as e:
        where = "upload" if isinstance(source, bytes) else str(source)
        raise ImageError(f"not a recognised image format: {where}", status=415, code="unsupported_image") from e
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large to decode safely: {e}", status=413, code="too_many_pixels") from e
    except (OSError, SyntaxError, ValueError) as e:  # a header that starts right and then breaks off
        raise ImageError(f"image is corrupt or truncated: {e}") from e


NUMERIC_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _numeric_white(img: Image.Image) -> float:
    """The value that means white in a 16/32-bit grayscale image: 65535 for 16 bits, else its real range."""
    if img.mode.startswith("I;16"):
        return 65535.0
    high = float(img.getextrema()[1])  # computed in C, no copy of the pixels
    return 1.0 if img.mode == "F" and high <= 1.0 else max(high, 1.0)


def _to_rgb(img: Image.Image, white: float | None = None) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited on white (product shots are on white).

    `white` is the value of white in a 16/32-bit grayscale image when it was measured before a reduction."""
    mode = img.mode
    if mode in NUMERIC_MODES:
        # 16-bit / 32-bit grayscale: scale the real range to 8 bits instead of clipping to white.
        hi = white if white is not None else _numeric_white(img)
        a = np.array(img, dtype=np.float32)  # a writable copy, scaled in place
        a *= np.float32(255.0 / hi)
        a += np.float32(0.5)
        a = np.clip(a, 0, 255, out=a).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, WHITE)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    if mode == "RGB":
        return img
    if mode == "1":
        return img.convert("L").convert("RGB")
    return img.convert("RGB")  # L, CMYK, YCbCr, LAB, HSV


def _reduce(img: Image.Image, keep: int) -> tuple[Image.Image, float | None]:
    """Box-reduce by an integer factor so the longer side stays >= keep; also white of a numeric image.

    Modes PIL cannot average (palette, 1-bit, 16-bit) are first converted to ones it can, so a palette
    index or a bit is never averaged as if it were a grey level."""
    white = _numeric_white(img) if img.mode in NUMERIC_MODES else None
    factor = max(img.size) // keep
    if factor < 2:
        return img, white
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    elif img.mode == "1":
        img = img.convert("L")
    elif img.mode.startswith("I;16"):
        img = img.convert("I")
    return img.reduce(factor), white


def check_shape(width: int, height: int, max_pixels: int) -> None:
    """ImageError unless width x height is a usable image: some pixels, not too many, not absurdly thin."""
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            f"image has {width}x{height} = {width * height} pixels, more than the limit of {max_pixels}",
            status=413, code="too_many_pixels",
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(f"image is {width}x{height} pixels: a side more than {MAX_ASPECT} times the other is "
                         "not a photo", code="bad_image_shape")


def decode_image(source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None,
                 reduce_to: int | None = None) -> Image.Image:
    """Decode to an upright RGB image, or raise ImageError with the reason (status 400/413/415).

    `draft` lets a JPEG decode at a reduced scale that stays at least that many pixels on each side.
    `reduce_to` bounds memory: a larger image is decoded in JPEG draft mode and box-reduced before any
    conversion, keeping its longer side at least `reduce_to` pixels.
    """
    white = None
    if isinstance(source, Image.Image):
        img = source
    else:
        img = _open(source)
        check_shape(*img.size, max_pixels)
        if reduce_to is not None:
            draft = max(draft or 0, reduce_to)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL warns on odd EXIF; the image itself is fine
                img.seek(0)  # animated GIF/WebP/APNG: the first frame
                if draft is not None:
                    img.draft("RGB", (draft, draft))
                img.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise ImageError(f"image is corrupt or truncated: {e}") from e
    if reduce_to is not None:
        img, white = _reduce(img, reduce_to)
    try:
        img = ImageOps.exif_transpose(img)  # phone photos: honour the EXIF orientation tag
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose a usable image
        pass
    return _to_rgb(img, white)


def letterbox(img: Image.Image, size: int) -> Image.Image:
    """Pad to a square on white (centred, no crop: the garment may be anywhere), then resize to size.

    A large image is box-reduced before it is padded: the canvas is the longer side squared, so padding
    first would turn a 205-byte 20000 x 2 PNG into a 1.2 GB canvas."""
    img, _ = _reduce(img, REDUCE_GAP * size)
    width, height = img.size
    side = max(width, height)
    if width != height:
        canvas = Image.new("RGB", (side, side), WHITE)
        canvas.paste(img, ((side - width) // 2, (side - height) // 2))
        img = canvas
    if side != size:
        img = img.resize((size, size), Image.Resampling.LANCZOS)  # the final antialias
    return img


def to_array(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 (3, H, W) in [-1, 1]."""
    a = np.asarray(img, dtype=np.float32)  # (H, W, 3) in [0, 255]
    return np.ascontiguousarray(a.transpose(2, 0, 1)) / 127.5 - 1.0


def preprocess(source: Source, size: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The shared preprocessing: any image source -> float32 (3, size, size) in [-1, 1]."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return to_array(letterbox(decode_image(source, max_pixels=max_pixels, reduce_to=REDUCE_GAP * size), size))


def preprocess_many(pool: Executor, paths: Sequence[Path], size: int) -> list[np.ndarray | str]:
    """Preprocess files in the pool's threads (PIL releases the GIL): each (3, S, S), or why it could not be
    read ("name: reason"), so a batch job skips a bad file instead of stopping."""
    def one(path: Path) -> np.ndarray | str:
        try:
            return preprocess(path, size)
        except ImageError as e:
            return f"{Path(path).name}: {e.reason}"
    return list(pool.map(one, paths))


def to_image(array: np.ndarray) -> Image.Image:
    """float (3, H, W) in [-1, 1] -> RGB PIL image (values outside the range are clipped)."""
    a = np.asarray(array, dtype=np.float32)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"expected an array of shape (3, H, W), got {a.shape}")
    u8 = np.clip((a.transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(u8, "RGB")


def to_png_bytes(array: np.ndarray) -> bytes:
    """float (3, H, W) in [-1, 1] -> PNG file bytes.

    zlib level 1: at 256 px it encodes about 6x faster than PIL's default level 6 for files ~18 % larger
    (measured on this box: 10 vs 60 ms, 101 vs 85 kB) - on the service's response path, time wins."""
    buf = io.BytesIO()
    to_image(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def max_embed_level(size: int) -> int:
    """The coarsest comparison scale for `size` px images: halvings that stay exact and keep MIN_LEVEL_SIDE px."""
    level = 0
    while size % 2 ** (level + 1) == 0 and size >> (level + 1) >= MIN_LEVEL_SIDE:
        level += 1
    return level


def check_embed_level(level: int, size: int) -> None:
    """UserError unless `level` pyramid levels fit `size` px images (checked here so `rtd demo` needs no torch)."""
    if not 0 <= level <= max_embed_level(size):
        raise UserError(f"embed level {level} does not fit {size} px images: each level halves the side and at "
                        f"least {MIN_LEVEL_SIDE} px must remain (0 to {max_embed_level(size)})")
