"""What the service serves: the two ONNX models behind micro-batchers, and the catalog.

The service's whole contract with the training side is the artifact folder and the index folder
(DESIGN.md, "Artifact contract"): generator.onnx, embedder.onnx and model.json; catalog-*.faiss,
catalog-*.sqlite and index.json. No torch, no `training/`, no `models/` here.

Loading runs in the background after the server starts, so /health/live answers at once and
/health/ready says why it is not ready yet (loading, a broken folder, warming up) until a warm-up
request has gone through generator -> embedder -> catalog.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import re
from pathlib import Path

import anyio
import numpy as np

from index.artifacts import Artifacts, read_artifacts
from index.catalog import Catalog, Hit, ProductMeta, read_manifest
from index.errors import UserError
from index.onnx import OnnxEmbedder, OnnxGenerator
from service.batching import MicroBatcher
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger(__name__)

PRODUCT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
IMAGES_DIR = "images"  # admin-added product images live under INDEX/images/


def valid_product_id(product_id: str) -> bool:
    """A safe product id: 1-64 of [A-Za-z0-9._-], and not "." or ".." (never a path component)."""
    return bool(PRODUCT_ID.match(product_id)) and product_id.strip(".") != ""


def check_folders(artifacts: Path, index: Path) -> Artifacts:
    """Fail fast (UserError) when the artifact or index folder is unusable, or they do not belong together."""
    info = read_artifacts(artifacts)
    manifest = read_manifest(index)
    if manifest["embedder"]["sha256"] != info.embedder_sha256:
        raise UserError(f"index {index} was built with another embedder (sha256 "
                        f"{manifest['embedder']['sha256'][:12]}) than {artifacts} (sha256 "
                        f"{info.embedder_sha256[:12]}); rebuild it with `rtd index build`")
    return info


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a file so that it is either absent or complete, even across a crash."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Engine:
    """The loaded models and catalog of one app, plus whether they are ready to serve and why not."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.reason = "starting: loading the models and the catalog"
        self.warmed = False
        self.info: Artifacts | None = None
        self.catalog: Catalog | None = None
        self.providers: list[str] = []
        self.generator: MicroBatcher | None = None
        self.embedder: MicroBatcher | None = None
        self._write_lock = asyncio.Lock()  # admin writes and reloads, one at a time

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once everything is loaded, warm and still running."""
        return (self.warmed and self.catalog is not None and self.generator is not None
                and self.generator.running and self.embedder is not None and self.embedder.running)

    @property
    def size(self) -> int:
        assert self.info is not None, "engine not loaded"
        return self.info.size

    async def start(self) -> None:
        """Load, start the batchers and warm up; on failure, keep the reason for /health/ready."""
        s = self.settings
        try:
            generator, embedder, catalog = await anyio.to_thread.run_sync(self._load)
            self.providers = generator.providers
            batching = {"max_batch": s.max_batch, "max_wait_ms": s.max_wait_ms, "queue_size": s.queue_size,
                        "metrics": self.metrics}
            self.generator = MicroBatcher("generator", generator, **batching)
            self.embedder = MicroBatcher("embedder", embedder, **batching)
            await self.generator.start()
            await self.embedder.start()
            self._set_catalog(catalog)
            self.reason = "warming up: first inference through generator, embedder and catalog"
            await self._warm_up()
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure must show in /health/ready, not kill the process
            self.reason = f"failed to load: {e}" if isinstance(e, UserError) else f"failed to load: {type(e).__name__}: {e}"
            log.error("not ready: %s", self.reason)
            return
        self.warmed = True
        self.reason = ""
        log.info("ready: %d products, image size %d, onnxruntime providers %s", len(catalog), self.size,
                 self.providers)

    def _load(self) -> tuple[OnnxGenerator, OnnxEmbedder, Catalog]:
        s = self.settings
        self.info = check_folders(s.artifacts, s.index)
        providers = s.providers or None  # None: CUDA when onnxruntime-gpu has it, else CPU (index.onnx)
        generator = OnnxGenerator(s.artifacts / "generator.onnx", providers, s.threads)
        embedder = OnnxEmbedder(s.artifacts / "embedder.onnx", providers, s.threads)
        log.info("generator on %s, embedder on %s", generator.providers, embedder.providers)
        catalog = Catalog.open(s.index, expect_embedder_sha256=self.info.embedder_sha256)
        if embedder.dim is not None and catalog.dim != embedder.dim:
            raise UserError(f"index dim {catalog.dim} != embedder output dim {embedder.dim}")
        return generator, embedder, catalog

    async def _warm_up(self) -> None:
        # A smooth colour gradient: a blank image could embed to a zero vector in a real model too.
        ramp = np.linspace(-1.0, 1.0, self.size, dtype=np.float32)
        photo = np.stack([np.broadcast_to(ramp, (self.size, self.size)),
                          np.broadcast_to(ramp[:, None], (self.size, self.size)),
                          np.full((self.size, self.size), 0.5, np.float32)])  # (3, S, S)
        vector = await self.embed(await self.generate(photo))
        if len(self.catalog or ()):
            await self.search(vector[None], 1, None)

    async def stop(self) -> None:
        """Stop the batchers (pending requests get an error, not a hang)."""
        for batcher in (self.generator, self.embedder):
            if batcher is not None:
                await batcher.stop()

    def _set_catalog(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.metrics.catalog_size.set(len(catalog))

    # ---- serving -----------------------------------------------------------------------------------

    async def generate(self, photo: np.ndarray) -> np.ndarray:
        """(3, S, S) street photo in [-1, 1] -> (3, S, S) product image in [-1, 1]."""
        assert self.generator is not None
        return await self.generator.submit(photo)

    async def embed(self, image: np.ndarray) -> np.ndarray:
        """(3, S, S) product image in [-1, 1] -> (D,) unit embedding."""
        assert self.embedder is not None
        return await self.embedder.submit(image)

    async def search(self, vectors: np.ndarray, k: int, category: str | None) -> list[list[Hit]]:
        """Top-k catalog products per (Q, D) query, off the event loop."""
        assert self.catalog is not None
        return await anyio.to_thread.run_sync(functools.partial(self.catalog.search, vectors, k, category))

    def image_file(self, product: ProductMeta) -> Path | None:
        """The catalog image of a product on disk (relative paths are under the index folder), if present."""
        if not product.image_path:
            return None
        path = Path(product.image_path)
        path = path if path.is_absolute() else self.settings.index / path
        return path if path.is_file() else None

    # ---- admin -------------------------------------------------------------------------------------

    async def add_product(self, product: ProductMeta, image_bytes: bytes, suffix: str, vector: np.ndarray) -> int:
        """Store the image, add the product and save the catalog, all before returning (durable)."""
        assert self.catalog is not None
        async with self._write_lock:
            digest = hashlib.sha256(image_bytes).hexdigest()[:16]
            relative = Path(IMAGES_DIR) / f"{product.product_id}-{digest}{suffix}"
            old = self.catalog.get(product.product_id)

            def write() -> None:
                (self.settings.index / IMAGES_DIR).mkdir(exist_ok=True)
                _write_atomic(self.settings.index / relative, image_bytes)  # the image first: the catalog
                # committed next must never name a missing file
                self.catalog.add([ProductMeta(product.product_id, product.title, product.category, str(relative))],
                                 vector[None])
                self.catalog.save(self.settings.index)

            await anyio.to_thread.run_sync(write)
            if old is not None and old.image_path and old.image_path != str(relative):
                self._delete_stored_image(old.image_path)
            self._set_catalog(self.catalog)
            return len(self.catalog)

    async def remove_product(self, product_id: str) -> bool:
        """Remove a product and save the catalog; False when it was not there."""
        assert self.catalog is not None
        async with self._write_lock:
            old = self.catalog.get(product_id)
            if old is None:
                return False

            def write() -> None:
                self.catalog.remove([product_id])
                self.catalog.save(self.settings.index)

            await anyio.to_thread.run_sync(write)
            if old.image_path:
                self._delete_stored_image(old.image_path)
            self._set_catalog(self.catalog)
            return True

    def _delete_stored_image(self, image_path: str) -> None:
        # Only images the admin API stored; images of the built catalog belong to the data set.
        path = Path(image_path)
        if not path.is_absolute() and path.parts[:1] == (IMAGES_DIR,):
            with contextlib.suppress(OSError):
                (self.settings.index / path).unlink()

    async def reload(self) -> int:
        """Re-open the catalog from disk (another writer, a rebuilt index) without a restart."""
        assert self.info is not None
        async with self._write_lock:
            catalog = await anyio.to_thread.run_sync(
                functools.partial(Catalog.open, self.settings.index, expect_embedder_sha256=self.info.embedder_sha256))
            self._set_catalog(catalog)
            return len(catalog)
