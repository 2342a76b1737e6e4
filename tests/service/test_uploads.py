"""Bad and odd uploads: every refusal is JSON with the right status, every odd-but-valid image is served."""

from __future__ import annotations

import io
import json
import select
import socket
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rtdgan.index.images import preprocess
from tests.service.conftest import SIZE, Tiny, running_client, settings_for, uvicorn_server


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def picture(width: int = 40, height: int = 30) -> Image.Image:
    a = np.zeros((height, width, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None]
    a[..., 1] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    a[..., 2] = 90
    return Image.fromarray(a, "RGB")


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG whose header claims 900 Mpx: a decompression bomb (its data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def animated_gif() -> bytes:
    frames = [picture().convert("P"), Image.new("RGB", (40, 30), (0, 0, 255)).convert("P")]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit_png() -> bytes:
    a = (np.linspace(0, 65535, 32 * 24).reshape(24, 32)).astype(np.uint16)
    img = Image.fromarray(a)
    assert img.mode == "I;16"
    return encode(img, "PNG")


def exif_rotated_jpeg() -> bytes:
    img = Image.new("RGB", (40, 20), (255, 0, 0))  # landscape as stored ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... portrait as shown: rotate 90 degrees clockwise
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


BAD: dict[str, tuple[Callable[[], bytes], int, str]] = {
    "truncated_jpeg": (lambda: encode(picture(), "JPEG", quality=90)[:200], 400, "bad_image"),
    "text_file": (lambda: b"hello, I am not an image\n" * 10, 415, "unsupported_image"),
    "zero_bytes": (lambda: b"", 400, "bad_image"),
    "png_bomb": (png_bomb, 413, "too_many_pixels"),
    "html_named_png": (lambda: b"<html><body>hi</body></html>", 415, "unsupported_image"),
}

ODD: dict[str, Callable[[], bytes]] = {
    "cmyk_jpeg": lambda: encode(picture().convert("CMYK"), "JPEG", quality=95),
    "sixteen_bit_png": sixteen_bit_png,
    "animated_gif": animated_gif,
    "grayscale_png": lambda: encode(picture().convert("L"), "PNG"),
    "rgba_png": lambda: encode(picture().convert("RGBA"), "PNG"),
    "palette_png": lambda: encode(picture().convert("P"), "PNG"),
    "exif_rotated_jpeg": exif_rotated_jpeg,
    "one_by_one": lambda: encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
    "one_by_five_hundred": lambda: encode(picture(1, 500), "PNG"),
    "webp": lambda: encode(picture(), "WEBP", lossless=True),
}


@pytest.mark.parametrize("name", sorted(BAD))
@pytest.mark.parametrize("route", ["/search", "/generate"])
def test_bad_files_are_refused_with_the_reason(client: TestClient, route: str, name: str) -> None:
    make, status, code = BAD[name]
    response = client.post(route, files={"image": (f"{name}.png", make(), "image/png")})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and len(body["detail"]) > 10


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_but_valid_images_are_served(client: TestClient, name: str) -> None:
    data = ODD[name]()
    response = client.post("/generate", files={"image": (name, data, "application/octet-stream")})
    assert response.status_code == 200, response.text
    got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)  # (S, S, 3)
    expected = preprocess(data, SIZE)[[2, 1, 0]]  # the tiny generator swaps red and blue
    expected_u8 = np.clip((expected.transpose(1, 2, 0) + 1) * 127.5 + 0.5, 0, 255).astype(int)
    assert got.shape == (SIZE, SIZE, 3) and np.abs(got - expected_u8).max() <= 1
    search = client.post("/search", files={"image": (name, data, "application/octet-stream")}, data={"k": "3"})
    assert search.status_code == 200 and len(search.json()["results"]) == 3


def test_exif_orientation_is_honoured(client: TestClient) -> None:
    response = client.post("/generate", files={"image": ("r.jpg", exif_rotated_jpeg(), "image/jpeg")})
    got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)  # (S, S, 3)
    # Shown as portrait 20x40, letterboxed: white columns at the sides, the (swapped: blue) garment between.
    assert got[:, 0].min() > 240 and got[:, -1].min() > 240
    assert got[SIZE // 2, SIZE // 2, 2] > 200 and got[SIZE // 2, SIZE // 2, 0] < 60


def test_pixel_limit_setting(tiny: Tiny) -> None:
    with running_client(settings_for(tiny, max_pixels=1000)) as c:
        big = c.post("/generate", files={"image": ("p.png", encode(picture(40, 30), "PNG"), "image/png")})
        small = c.post("/generate", files={"image": ("p.png", encode(picture(30, 30), "PNG"), "image/png")})
    assert big.status_code == 413 and big.json()["error"] == "too_many_pixels"
    assert small.status_code == 200


def test_upload_limits(tiny: Tiny) -> None:
    with running_client(settings_for(tiny, max_upload_bytes=20_000)) as c:
        # Past the whole-body limit (image + form overhead): refused by the Content-Length header.
        huge = c.post("/search", files={"image": ("a.png", b"\0" * 200_000, "image/png")})
        # Within the body limit but past the image limit: refused by the route while reading.
        over = c.post("/search", files={"image": ("a.png", b"\0" * 30_000, "image/png")})
        fits = c.post("/search", files={"image": ("a.png", encode(picture(), "PNG"), "image/png")})
    assert huge.status_code == 413 and huge.json()["error"] == "too_large"
    assert over.status_code == 413 and "image upload is larger than 20000 bytes" in over.json()["detail"]
    assert fits.status_code == 200


def _raw_request(base: str, head: bytes, chunks: int, chunk: bytes) -> tuple[bytes, int]:
    """Send a request head, then body chunks until the server answers; (response bytes, body bytes sent)."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        try:
            for _ in range(chunks):
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop sending
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        response = b""
        try:
            while data := sock.recv(65536):
                response += data
                if b"\r\n\r\n" in response and response.endswith(b"}"):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return response, sent


def test_upload_limit_is_checked_while_streaming(tiny: Tiny) -> None:
    limit = 50_000
    with uvicorn_server(settings_for(tiny, max_upload_bytes=limit)) as base:
        # A Content-Length over the limit is refused before any body byte is sent.
        head = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 500000000\r\n\r\n")
        response, _ = _raw_request(base, head, chunks=0, chunk=b"")
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"] == "too_large"
        # A chunked body (no length up front) is cut off soon after it passes the limit, not read to the end.
        head = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        part = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        payload = b"\0" * 65536
        chunk = b"%x\r\n%s\r\n" % (len(payload), payload)
        response, sent = _raw_request(base, head + b"%x\r\n%s\r\n" % (len(part), part), chunks=2000, chunk=chunk)
        assert response.startswith(b"HTTP/1.1 413"), response[:200]
        assert json.loads(response.split(b"\r\n\r\n", 1)[1])["error"] == "too_large"
        assert sent < 2000 * len(chunk) // 4  # far less than the 131 MB the client would have sent
