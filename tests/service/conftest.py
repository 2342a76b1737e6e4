"""Tiny real artifacts and a tiny real index for the service tests, made without torch.

generator.onnx swaps the red and blue channels (a 1x1 Conv), so the test knows exactly what it must
output; embedder.onnx average-pools to 4x4, projects the 48 numbers to D=8 and L2-normalises. Uploading
a product image with red and blue swapped therefore generates exactly that product image, and its
search must return that product first with score 1.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import shutil
import socket
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import uvicorn
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from rtdgan.index.build import build_index
from rtdgan.service.app import create_app
from rtdgan.service.middleware import uvicorn_options
from rtdgan.service.settings import Settings
from tests.helpers import random_picture

with warnings.catch_warnings():  # Starlette's note that its TestClient will move from httpx to httpx2
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient

SIZE = 16  # S
DIM = 8  # D
CATEGORIES = ("dress", "shirt")


def _save(model: onnx.ModelProto, path: Path) -> str:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_generator(path: Path, size: int = SIZE) -> str:
    """generator.onnx: `photo` (B, 3, S, S) -> `product` = photo with R and B swapped; returns its sha256."""
    swap = np.zeros((3, 3, 1, 1), np.float32)  # (C_out, C_in, 1, 1)
    swap[0, 2] = swap[1, 1] = swap[2, 0] = 1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["photo", "w"], ["product"])], "tiny_generator",
        [helper.make_tensor_value_info("photo", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("product", TensorProto.FLOAT, ["batch", 3, size, size])],
        [numpy_helper.from_array(swap, "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def make_embedder(path: Path, size: int = SIZE, dim: int = DIM, seed: int = 0) -> str:
    """embedder.onnx: `image` (B, 3, S, S) -> 4x4 average pool -> (B, 48) @ W (48, D) -> L2 norm; sha256."""
    weight = np.random.default_rng(seed).standard_normal((48, dim)).astype(np.float32)
    cell = size // 4
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),  # (B, 48)
        helper.make_node("MatMul", ["flat", "w"], ["projected"]),  # (B, D)
        helper.make_node("LpNormalization", ["projected"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "tiny_embedder",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(weight, "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def make_artifacts(folder: Path, size: int = SIZE, dim: int = DIM, seed: int = 0) -> Path:
    """A complete artifact folder: generator.onnx, embedder.onnx and model.json with their sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    gen_sha = make_generator(folder / "generator.onnx", size)
    emb_sha = make_embedder(folder / "embedder.onnx", size, dim, seed)
    model = {
        "format_version": 1,
        "generator": {"architecture": "tiny-channel-swap", "stages": 1, "resolution": size, "width": 1,
                      "onnx_sha256": gen_sha},
        "embedder": {"backbone": "tiny-pool-project", "weights_source": "tests/service/conftest.py",
                     "weights_sha256": "", "dim": dim, "onnx_sha256": emb_sha},
        "preprocessing": {"size": size, "letterbox": "white", "range": [-1, 1]},
    }
    (folder / "model.json").write_text(json.dumps(model, indent=1), encoding="utf-8")
    return folder


def _projection(path: Path, weight: np.ndarray) -> str:
    """A head side: `features` (B, F) @ W (F, E) -> L2 norm -> `embedding`; its sha256."""
    nodes = [helper.make_node("MatMul", ["features", "w"], ["projected"]),
             helper.make_node("LpNormalization", ["projected"], ["embedding"], axis=1, p=2)]
    graph = helper.make_graph(
        nodes, "tiny_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", weight.shape[0]])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", weight.shape[1]])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def make_head(artifacts: Path, mode: str = "fused", dim: int = DIM, out_dim: int = 6, seed: int = 0) -> Path:
    """A retrieval head in an artifact folder, as `rtd fit-head` writes it (index/head.py), without torch.

    The catalog side is a random D x E projection C. The query side reads the generated image's features through
    the same C and ignores the photo's ([C; 0] for "fused"), so a street photo whose generated image is exactly a
    catalog image (tiny world: the channel swap) still finds that product first with score 1 -- in E != D
    dimensions, so a vector that skipped the head cannot be stored or searched by mistake."""
    catalog = np.random.default_rng(seed).standard_normal((dim, out_dim)).astype(np.float32)
    inputs = {"fused": ["generated", "photo"], "generated": ["generated"], "photo": ["photo"]}[mode]
    query = np.concatenate([catalog if name == "generated" or mode == "photo" else np.zeros_like(catalog)
                            for name in inputs])
    model = json.loads((artifacts / "model.json").read_text())
    doc = {"format_version": 1, "mode": mode, "embedding_dim": out_dim,
           "query": {"input": "features", "output": "embedding", "inputs": inputs, "dim": len(inputs) * dim,
                     "onnx": "head_query.onnx", "onnx_sha256": _projection(artifacts / "head_query.onnx", query)},
           "catalog": {"input": "features", "output": "embedding", "inputs": ["product"], "dim": dim,
                       "onnx": "head_catalog.onnx",
                       "onnx_sha256": _projection(artifacts / "head_catalog.onnx", catalog)},
           "trained_with": {"generator_sha256": model["generator"]["onnx_sha256"],
                            "embedder_sha256": model["embedder"]["onnx_sha256"], "seed": seed}}
    (artifacts / "head.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return artifacts


def make_crop(artifacts: Path, box: tuple[float, float, float, float] = (0.25, 0.125, 0.5, 0.875),
              input_size: int = 16) -> Path:
    """A person crop in an artifact folder, as `rtd fit-crop` writes it (index/crop.py), without torch: crop.onnx
    answers `box` for every image (0 x the image's mean, plus the constant), whatever it shows."""
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "zero"], ["nothing"]),
             helper.make_node("Add", ["nothing", "box_value"], ["box"])]
    graph = helper.make_graph(
        nodes, "tiny_crop",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, input_size, input_size])],
        [helper.make_tensor_value_info("box", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.zeros((3, 4), np.float32), "zero"),
         numpy_helper.from_array(np.array(box, np.float32), "box_value")])
    digest = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
                   artifacts / "crop.onnx")
    doc = {"format_version": 1, "input": "image", "output": "box", "input_size": input_size, "onnx": "crop.onnx",
           "onnx_sha256": digest, "validation": {"iou": 0.5}}
    (artifacts / "crop.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return artifacts


def swap_red_blue(img: Image.Image) -> Image.Image:
    r, g, b = img.convert("RGB").split()
    return Image.merge("RGB", (b, g, r))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Tiny:
    """The session's shared, read-only test world."""

    artifacts: Path
    index: Path
    products: Path  # catalog images, PNG, named <product_id>.png
    samples: Path  # street photos for the demo page (LookBook names)
    product_ids: tuple[str, ...]

    def product_image(self, product_id: str) -> Image.Image:
        return Image.open(self.products / f"{product_id}.png").convert("RGB")

    def query_for(self, product_id: str) -> bytes:
        """A 'street photo' whose generated image is exactly that product's catalog image."""
        return png_bytes(swap_red_blue(self.product_image(product_id)))


def make_world(root: Path, products: int = 10, seed: int = 0) -> Tiny:
    """Artifacts, catalog images (PNG, 32 px), an index built by `rtdgan.index.build`, and demo samples."""
    rng = np.random.default_rng(seed)
    artifacts = make_artifacts(root / "artifacts")
    images = root / "catalog"
    images.mkdir(parents=True)
    samples = root / "samples"
    samples.mkdir()
    ids = tuple(f"P{i:03d}" for i in range(products))
    with (root / "catalog.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["product_id", "image", "title", "category"])
        for i, pid in enumerate(ids):
            picture = random_picture(rng, 32)
            picture.save(images / f"{pid}.png")
            swap_red_blue(picture).save(samples / f"PID{i:06d}_CLEAN0_IID{i:06d}.jpg", quality=95)
            writer.writerow([pid, f"catalog/{pid}.png", f"product {i}", CATEGORIES[i % 2]])
    build_index(artifacts, root / "catalog.csv", root / "index")
    return Tiny(artifacts, root / "index", images, samples, ids)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return make_world(tmp_path_factory.mktemp("service_world"))


@pytest.fixture
def index_copy(tiny: Tiny, tmp_path: Path) -> Path:
    """A private, writable copy of the index folder (for admin writes)."""
    return Path(shutil.copytree(tiny.index, tmp_path / "index"))


def wait_http_ready(base: str, server: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    """Poll BASE/health/ready until 200 while the server process lives; fail with its log otherwise."""
    import httpx

    deadline, ready = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline and server.poll() is None:
        try:
            ready = httpx.get(f"{base}/health/ready", timeout=2)
            if ready.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server at {base} not ready: {log.read_text()}")


def settings_for(tiny: Tiny, **overrides: object) -> Settings:
    """Settings over the tiny world; keyword arguments override any field."""
    values: dict[str, object] = {"artifacts": tiny.artifacts, "index": tiny.index, "providers": ["CPUExecutionProvider"],
                                 "threads": 1, "max_wait_ms": 0.0, "demo_samples": tiny.samples}
    return Settings(**(values | overrides))


def wait_ready(client: TestClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get("/health/ready")
        if response.status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"not ready after {timeout_s} s: {response.json()}")


@contextlib.contextmanager
def running_client(settings: Settings, ready: bool = True) -> Iterator[TestClient]:
    """A TestClient over a fresh app with its lifespan running; waits for readiness unless told not to."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        if ready:
            wait_ready(client)
        yield client


@pytest.fixture
def client(tiny: Tiny) -> Iterator[TestClient]:
    with running_client(settings_for(tiny)) as c:
        yield c


def free_port() -> int:
    """A loopback port that was free a moment ago (for a server started in a subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def uvicorn_server(settings: Settings) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a thread; yields its base URL once ready."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False,
                                          **uvicorn_options(settings)))  # the same HTTP limits as `rtd serve`
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("uvicorn server did not become ready")
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# The browser tests drive Debian's chromium headless; they are skipped where it is not installed.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--virtual-time-budget=15000"]


def run_chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its own profile folder, run with `args` (a page to dump or screenshot)."""
    return subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)
