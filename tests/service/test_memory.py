"""One request's memory is bounded: tiny files that decode to absurd shapes cannot cost the server gigabytes.

The server runs in a subprocess (uvicorn over real HTTP) so its peak RSS is its own: before each upload the
peak is reset (`/proc/self/clear_refs`), after it the growth of VmHWM is that request's cost.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.service.conftest import make_world

LIMIT_MB = 300  # the bound on one request's peak RSS growth

PROBE = r"""
import json, sys, httpx
from pathlib import Path
from tests.service.conftest import Tiny, settings_for, uvicorn_server

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024  # MB
world, uploads = Path(sys.argv[1]), sys.argv[2:]
tiny = Tiny(world / "artifacts", world / "index", world / "catalog", world / "samples", ())
results = {}
with uvicorn_server(settings_for(tiny, max_upload_bytes=64 << 20)) as base:
    for path in uploads:
        data = Path(path).read_bytes()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = status("VmRSS")
        response = httpx.post(f"{base}/search", files={"image": ("x", data)}, timeout=120)
        results[Path(path).name] = [response.status_code, status("VmHWM") - before, response.text[:200]]
print(json.dumps(results))
"""


def thin_png(width: int, height: int) -> bytes:
    """A decompression bomb: an RGB PNG of one colour, a few hundred bytes for any width x height."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = zlib.compress((b"\0" + b"\xc8\x1e\x1e" * width) * height, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def float_tiff(side: int) -> bytes:
    """A compressed 32-bit float TIFF: a small file that a naive decode turns into a float64 copy of every pixel."""
    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 0.25, np.float32), "F").save(buf, format="TIFF", compression="tiff_adobe_deflate")
    return buf.getvalue()


def big_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 30, 30)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# name -> (bytes, the statuses allowed); every accepted upload must stay under LIMIT_MB.
UPLOADS = {
    "thin_20000x2.png": (lambda: thin_png(20000, 2), {400}),
    "thin_10000x3.png": (lambda: thin_png(10000, 3), {400}),
    "thin_30000x2.png": (lambda: thin_png(30000, 2), {400}),
    "thin_100000x3.png": (lambda: thin_png(100000, 3), {400}),
    "thin_1x39000000.png": (lambda: thin_png(1, 39_000_000), {400}),
    "thin_900x2.png": (lambda: thin_png(900, 2), {200}),  # thin but a plausible crop: served
    "float_6000.tiff": (lambda: float_tiff(6000), {200}),
    "rgb_6000.png": (lambda: big_png(6000), {200}),
}


@pytest.mark.slow
def test_absurd_shapes_are_refused_and_no_request_costs_more_than_300_mb(tmp_path: Path) -> None:
    make_world(tmp_path / "world")
    paths = []
    for name, (make, _) in UPLOADS.items():
        (tmp_path / name).write_bytes(make())
        paths.append(str(tmp_path / name))
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "world"), *paths], capture_output=True,
                         text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for name, (_, statuses) in UPLOADS.items():
        status, grew_mb, body = results[name]
        assert status in statuses, (name, status, body)
        assert grew_mb < LIMIT_MB, f"{name}: peak RSS grew by {grew_mb:.0f} MB (answer {status})"
        if status == 400:
            assert json.loads(body)["error"] == "bad_image_shape" and "times the other" in body, body
