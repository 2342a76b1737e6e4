"""The shared preprocessing: every odd-but-valid image is converted, every bad one refused with a reason."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rtdgan.index.errors import ImageError
from rtdgan.index.images import decode_image, letterbox, preprocess, to_array, to_image, to_png_bytes


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_output_shape_range_and_dtype() -> None:
    a = preprocess(Image.new("RGB", (40, 30), (255, 0, 0)), 16)
    assert a.shape == (3, 16, 16) and a.dtype == np.float32
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert np.allclose(a[:, 8, 8], [1.0, -1.0, -1.0])  # red stays red


def test_letterbox_pads_on_white_without_cropping() -> None:
    img = letterbox(Image.new("RGB", (40, 10), (0, 0, 0)), 40)  # a wide black bar
    a = np.asarray(img)
    assert a.shape == (40, 40, 3)
    assert (a[0] == 255).all() and (a[-1] == 255).all()  # padding above and below is white
    assert (a[20, 1:-1] < 30).all()  # the bar is kept whole, left to right


@pytest.mark.parametrize("mode", ["L", "LA", "P", "PA", "RGBA", "CMYK", "1", "I;16", "I", "F", "YCbCr"])
def test_every_mode_becomes_rgb(mode: str) -> None:
    img = Image.new("RGB", (20, 20), (200, 100, 50)).convert(mode) if mode not in ("I;16", "I", "F") else \
        Image.fromarray(np.full((20, 20), 30000 if mode != "F" else 0.5, dtype={"I;16": np.uint16, "I": np.int32,
                                                                               "F": np.float32}[mode]))
    out = decode_image(img)
    assert out.mode == "RGB" and out.size == (20, 20)


def test_16_bit_grayscale_is_scaled_not_saturated() -> None:
    img = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))  # mid-grey in 16 bits
    data = encode(img, "PNG")
    a = preprocess(data, 8)
    assert abs(float(a.mean())) < 0.05  # mid-grey maps to ~0 in [-1, 1], not to white


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    a = preprocess(encode(img, "PNG"), 10)
    assert np.allclose(a, 1.0)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 20, 20))  # black on the left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)  # upright: portrait
    a = np.asarray(out.convert("L"), dtype=float)
    assert a[:20].mean() < 60 and a[20:].mean() > 200  # the black half is now on top


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (12, 12), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    a = preprocess(buf.getvalue(), 12)
    assert a[0].mean() > 0.9 and a[2].mean() < -0.9  # red, not blue


@pytest.mark.parametrize("shape", [(1, 1), (1, 300), (300, 1)])
def test_tiny_and_very_thin_images(shape: tuple[int, int]) -> None:
    a = preprocess(Image.new("RGB", shape, (10, 20, 30)), 16)
    assert a.shape == (3, 16, 16) and np.isfinite(a).all()


def test_not_an_image_is_415() -> None:
    with pytest.raises(ImageError) as e:
        preprocess(b"this is plain text, not a picture", 16)
    assert e.value.status == 415 and "not a recognised image" in str(e.value)


def test_empty_upload() -> None:
    with pytest.raises(ImageError, match="empty"):
        preprocess(b"", 16)


def test_truncated_jpeg_is_400_with_reason() -> None:
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(ImageError) as e:
        preprocess(data[: len(data) // 2], 16)
    assert e.value.status == 400 and "corrupt" in str(e.value)


def test_decompression_bomb_refused_before_decoding() -> None:
    data = encode(Image.new("L", (3000, 3000)), "PNG")  # small file, 9 Mpx
    with pytest.raises(ImageError) as e:
        preprocess(data, 16, max_pixels=1_000_000)
    assert e.value.status == 413 and "pixels" in str(e.value)


def test_missing_file() -> None:
    with pytest.raises(ImageError, match="no such image file"):
        preprocess("/nonexistent/photo.jpg", 16)


def test_round_trip_to_png() -> None:
    a = preprocess(Image.new("RGB", (16, 16), (0, 128, 255)), 16)
    back = np.asarray(Image.open(io.BytesIO(to_png_bytes(a))))
    assert back.shape == (16, 16, 3) and tuple(back[5, 5]) == (0, 128, 255)
    assert np.asarray(to_image(np.full((3, 2, 2), 5.0))).max() == 255  # out of range is clipped


def test_preprocessing_module_does_not_import_torch() -> None:
    code = "import sys, rtdgan.index.images, rtdgan.index.errors; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_absurdly_thin_image_is_refused_with_its_shape() -> None:
    with pytest.raises(ImageError) as e:
        preprocess(encode(Image.new("RGB", (20000, 2), (200, 30, 30)), "PNG"), 16)
    assert e.value.status == 400 and e.value.code == "bad_image_shape" and "20000x2" in str(e.value)


def test_large_image_is_reduced_before_padding_with_the_same_result() -> None:
    """Reducing first (bounded memory) gives what padding the full image and resizing it gave."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 900, 3), dtype=np.uint8), "RGB").resize((1800, 600))
    reduced = to_array(letterbox(img, 16))
    canvas = Image.new("RGB", (1800, 1800), (255, 255, 255))
    canvas.paste(img, (0, 600))
    padded_first = to_array(canvas.resize((16, 16), Image.Resampling.LANCZOS))
    assert np.abs(reduced - padded_first).mean() < 0.03
