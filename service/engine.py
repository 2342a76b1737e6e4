"""What the service serves: the one search pipeline (index/pipeline.py), its models behind micro-batchers.

The service's whole contract with the training side is the artifact folder and the index folder
(docs/architecture.md, "Artifact contract"): generator.onnx, embedder.onnx and model.json; catalog-*.faiss,
catalog-*.sqlite and index.json. No torch, no `training/`, no `models/` here. The engine owns no search
logic of its own: it runs the pipeline's plans (`plan` for /search, `generation_plan` for /generate) with the
micro-batched generator and embedder as their stages. The routes reach the pipeline and the catalog only through
its methods (service/routes/: decode, one engine call, encode).

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
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from PIL import Image

from rtdgan.index.catalog.base import IMAGES_DIR, CatalogEngine, ProductMeta, catalog_image
from rtdgan.index.catalog.engines import open_catalog
from rtdgan.index.catalog.file import Catalog, StaleCatalog, compact
from rtdgan.index.errors import UserError
from rtdgan.index.files import write_atomic
from rtdgan.index.parity import require_parity
from rtdgan.index.pipeline import Pipeline, QueryKind, QueryResult, check_index
from rtdgan.index.runtime.artifacts import Artifacts, read_artifacts
from rtdgan.index.runtime.backends import Backend, make_backend
from rtdgan.index.runtime.head import has_head, read_head
from rtdgan.service.batching import MicroBatcher, stage_deadline
from rtdgan.service.metrics import Metrics
from rtdgan.service.settings import Settings

log = logging.getLogger(__name__)

PRODUCT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# A leftover younger than this may belong to a write in progress in another replica: it is left alone.
ORPHAN_MIN_AGE_S = 600.0


def valid_product_id(product_id: str) -> bool:
    """A safe product id: 1-64 of [A-Za-z0-9._-], and not "." or ".." (never a path component)."""
    return bool(PRODUCT_ID.match(product_id)) and product_id.strip(".") != ""


def resolve_backend(settings: Settings) -> Backend:
    """The settings' backend with its precision resolved, checked by the parity gate (index/parity.py) unless
    `backend_unchecked`; UserError (one line naming `rtd check-backend`) when it is refused."""
    backend = make_backend(settings.backend, settings.precision, threads=settings.threads,
                           providers=settings.providers or None)  # no providers: CUDA when present, else CPU
    if settings.backend_unchecked and not backend.is_reference:
        log.warning("backend %s %s serves WITHOUT a parity check (backend_unchecked)", backend.name, backend.precision)
    else:
        require_parity(settings.artifacts, backend)
    return backend


def check_folders(artifacts: Path, index: Path) -> Artifacts:
    """Fail fast (UserError) when the artifact or index folder is unusable, or they do not belong together."""
    info = read_artifacts(artifacts)
    check_index(info, Path(index), read_head(info) if has_head(info) else None)
    return info


def sweep_orphans(index: Path, catalog: Catalog, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[Path]:
    """Remove what a crash left behind: temporary files of interrupted writes, and admin-uploaded images
    that no product names (the add never committed). Returns the paths removed."""
    referenced = {Path(p.image_path).name for p in catalog.products()
                  if p.image_path and Path(p.image_path).parts[:1] == (IMAGES_DIR,)}
    candidates = [p for p in index.glob("*.tmp")]
    images = index / IMAGES_DIR
    if images.is_dir():
        candidates += [p for p in images.iterdir() if p.name.endswith(".tmp") or p.name not in referenced]
    now, removed = time.time(), []
    for path in candidates:
        with contextlib.suppress(OSError):
            if path.is_file() and now - path.stat().st_mtime >= min_age_s:
                path.unlink()
                removed.append(path)
    return removed


class Engine:
    """The loaded models and catalog of one app, plus whether they are ready to serve and why not."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.reason = "starting: loading the models and the catalog"
        self.warmed = False
        self.pipeline: Pipeline | None = None
        self.providers: list[str] = []
        self.backend: Backend | None = None  # resolved at load (index/backends.py)
        self.generator: MicroBatcher | None = None
        self.embedder: MicroBatcher | None = None
        self._write_lock = asyncio.Lock()  # admin writes and reloads, one at a time
        self._compaction: asyncio.Task | None = None
        self._follower: asyncio.Task | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once everything is loaded, warm and still running."""
        return (self.warmed and self.catalog is not None and self.generator is not None
                and self.generator.running and self.embedder is not None and self.embedder.running)

    @property
    def size(self) -> int:
        assert self.pipeline is not None, "engine not loaded"
        return self.pipeline.size

    @property
    def info(self) -> Artifacts | None:
        return self.pipeline.artifacts if self.pipeline is not None else None

    @property
    def head_sha256(self) -> str | None:
        """head.json's sha256 of the retrieval head the catalog is embedded with, or None (no head)."""
        head = self.pipeline.head if self.pipeline is not None else None
        return head.sha256 if head is not None else None

    @property
    def catalog(self) -> CatalogEngine | None:
        """The catalog being served (None until loaded); admin writes and reloads replace it."""
        return self.pipeline.catalog if self.pipeline is not None else None

    async def start(self) -> None:
        """Load, start the batchers and warm up; on failure, keep the reason for /health/ready."""
        s = self.settings
        try:
            pipeline = await anyio.to_thread.run_sync(self._load)
            self.providers = pipeline.providers
            self.backend = pipeline.backend
            self.metrics.backend.info(pipeline.backend.describe())
            batching = {"max_batch": s.max_batch, "max_wait_ms": s.max_wait_ms, "queue_size": s.queue_size,
                        "metrics": self.metrics}
            self.generator = MicroBatcher("generator", pipeline.generate, **batching)
            self.embedder = MicroBatcher("embedder", pipeline.embed, **batching)
            await self.generator.start()
            await self.embedder.start()
            self.pipeline = pipeline
            self._set_catalog(pipeline.catalog)
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
        if self.settings.follow_interval_s > 0:
            self._follower = asyncio.get_running_loop().create_task(self._follow_forever(), name="catalog-follower")
        log.info("ready: %d products, image size %d, query %s, backend %s %s on %s", len(pipeline.catalog or ()),
                 self.size, pipeline.default_query + (" (retrieval head)" if pipeline.head else ""),
                 pipeline.backend.name, pipeline.backend.precision, self.providers)

    def _load(self) -> Pipeline:
        s = self.settings
        backend = resolve_backend(s)  # the parity gate: refused before any model loads
        pipeline = Pipeline.open(s.artifacts, s.index, backend=backend)
        log.info("generator and embedder on %s, backend %s, precision %s", pipeline.providers, backend.name,
                 backend.precision)
        try:  # a Milvus catalog has no index folder (its admin images are in the shared catalog root)
            removed = sweep_orphans(s.index, pipeline.catalog) if pipeline.catalog.folder is not None else []
        except OSError as e:  # a read-only mount: nothing of ours can be left there anyway
            log.info("orphan sweep skipped: %s", e)
        else:
            for path in removed:
                log.warning("removed a leftover of an interrupted write: %s", path)
        return pipeline

    async def _warm_up(self) -> None:
        """One query through the whole plan: generator, embedder and catalog."""
        # A smooth colour gradient: a blank image could embed to a zero vector in a real model too.
        ramp = np.linspace(-1.0, 1.0, self.size, dtype=np.float32)
        photo = np.stack([np.broadcast_to(ramp, (self.size, self.size)),
                          np.broadcast_to(ramp[:, None], (self.size, self.size)),
                          np.full((self.size, self.size), 0.5, np.float32)])  # (3, S, S)
        await self.query(photo, 1, None)

    async def stop(self) -> None:
        """Stop following and compacting, and the batchers (pending requests get an error, not a hang)."""
        for task in (self._follower, self._compaction):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for batcher in (self.generator, self.embedder):
            if batcher is not None:
                await batcher.stop()

    def _set_catalog(self, catalog: CatalogEngine) -> None:
        assert self.pipeline is not None
        self.pipeline.catalog = catalog
        self.metrics.catalog_size.set(len(catalog))

    # ---- serving -----------------------------------------------------------------------------------

    def prepare(self, data: bytes, max_pixels: int) -> np.ndarray | Image.Image:
        """An uploaded query photo as the plan takes it (`Pipeline.prepare`): (3, S, S), or with a person crop the
        decoded photo. CPU work: the routes run it in a worker thread."""
        assert self.pipeline is not None, "engine not loaded"
        return self.pipeline.prepare(data, max_pixels=max_pixels)

    def _stages(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        """The plan's stages as the service runs them: person crop and catalog off the event loop, micro-batched
        models (the head, a small matrix product, is called directly by the pipeline)."""
        return {"crop": self._crop, "generate": self._generate_batch, "embed": self._embed_batch,
                "search": self._search}

    async def generate(self, photo: np.ndarray | Image.Image) -> np.ndarray:
        """(3, S, S) street photo in [-1, 1] (or a decoded one: `Pipeline.prepare`) -> (3, S, S) product image in
        [-1, 1]: the pipeline's `generation_plan` (cut to its person first when the artifacts have a person crop)."""
        assert self.pipeline is not None
        photos = photo[None] if isinstance(photo, np.ndarray) else [photo]
        (_, generated), _ = await self.pipeline.run_async(self.pipeline.generation_plan(photos), self._stages())
        return generated[0]

    async def embed(self, image: np.ndarray) -> np.ndarray:
        """(3, S, S) image in [-1, 1] -> (D,) unit embedding (the embedder's features)."""
        assert self.embedder is not None
        return await self.embedder.submit(image)

    async def embed_catalog(self, image: np.ndarray) -> np.ndarray:
        """(3, S, S) catalog product image -> its catalog vector: the embedder's features, through the head's
        catalog side when there is a head (index/pipeline.py `embed_catalog`)."""
        assert self.pipeline is not None
        return self.pipeline.catalog_vectors((await self.embed(image))[None])[0]

    async def _crop(self, photos: np.ndarray | list[Image.Image]) -> np.ndarray:
        assert self.pipeline is not None
        with stage_deadline("crop"):  # a small graph and PIL work: off the event loop
            return await anyio.to_thread.run_sync(self.pipeline.crop, photos)

    async def _generate_batch(self, photos: np.ndarray) -> np.ndarray:
        """The plan's generate stage: its photos went through the plan's crop stage already (never crop twice)."""
        assert self.generator is not None
        return (await self.generator.submit(photos[0]))[None]

    async def _embed_batch(self, images: np.ndarray) -> np.ndarray:
        # The query's images (the generated image and the photo, for a fused head) are submitted together, so
        # they land in one micro-batch: one embedder call.
        return np.stack(await asyncio.gather(*(self.embed(image) for image in images)))

    async def _search(self, vectors: np.ndarray, k: int, category: str | None) -> list:
        assert self.pipeline is not None
        # Not started past the request's deadline, and not waited for past it (service/batching.py): a catalog
        # server that stops answering mid-call is a 503 at the deadline; the abandoned call ends with its own
        # timeout (index/catalog/milvus.py CALL_TIMEOUT_S).
        with stage_deadline("search"):
            return await anyio.to_thread.run_sync(functools.partial(self.pipeline.search, vectors, k, category),
                                                  abandon_on_cancel=True)

    async def query(self, photo: np.ndarray | Image.Image, k: int, category: str | None,
                    query: QueryKind | None = None) -> QueryResult:
        """One (3, S, S) photo (or a decoded one: `Pipeline.prepare`) through the pipeline's plan: person crop and
        catalog off the event loop, micro-batched models."""
        assert self.pipeline is not None
        photos = photo[None] if isinstance(photo, np.ndarray) else [photo]
        return await self.pipeline.query_async(photos, k, category, query, self._stages())

    # ---- the catalog as a resource (the routes' reads) ------------------------------------------

    @property
    def has_catalog(self) -> bool:
        """Whether a catalog is loaded (product pages need no models)."""
        return self.catalog is not None

    @property
    def product_count(self) -> int:
        """Products in the catalog being served."""
        assert self.catalog is not None, "catalog not loaded"
        return len(self.catalog)

    def page(self, limit: int, offset: int, category: str | None) -> tuple[list[ProductMeta], int]:
        """A page of products in insertion order, only `category` when given, and how many match."""
        assert self.catalog is not None, "catalog not loaded"
        return self.catalog.page(limit, offset, category)

    def categories(self) -> dict[str, int]:
        """Every category with its number of products."""
        assert self.catalog is not None, "catalog not loaded"
        return self.catalog.categories()

    def has_category(self, category: str) -> bool:
        """Whether some product has `category` (True while no catalog is loaded: nothing to refuse it with)."""
        return self.catalog is None or self.catalog.has_category(category)

    def product(self, product_id: str) -> ProductMeta | None:
        """A product's metadata, None when the catalog has no such id."""
        assert self.catalog is not None, "catalog not loaded"
        return self.catalog.get(product_id)

    def describe(self) -> dict:
        """What /health/ready reports once ready: catalog size, image size, providers, the query, the backend
        (and the one the index was embedded on), the retrieval head and the person crop."""
        assert self.pipeline is not None and self.catalog is not None, "engine not loaded"
        pipeline = self.pipeline
        return {"products": len(self.catalog), "image_size": self.size, "providers": self.providers,
                "query": pipeline.default_query, "backend": pipeline.backend.name,
                "precision": pipeline.backend.precision,
                "index_backend": getattr(self.catalog, "embedder_backend", None),
                "head": pipeline.head.describe() if pipeline.head else None,
                "crop": pipeline.cropper.info.describe() if pipeline.cropper else None}

    @property
    def images_home(self) -> Path:
        """The folder whose images/ holds admin-added images: the index folder; with Milvus (no index folder),
        the catalog root every replica mounts (RTD_CATALOG, else the root recorded at build)."""
        if self.catalog is None or self.catalog.folder is not None:
            return self.settings.index
        root = self.settings.catalog or (Path(self.catalog.catalog_root) if self.catalog.catalog_root else None)
        if root is None:
            raise UserError("admin adds to a Milvus catalog need RTD_CATALOG: a folder every replica mounts, "
                            "for the uploaded images")
        return root

    def _images_home(self) -> Path | None:
        with contextlib.suppress(UserError):
            return self.images_home
        return None

    def image_file(self, product: ProductMeta) -> Path | None:
        """The catalog image of a product on disk, if present (rtdgan.index.catalog.engines.catalog_image): relative paths
        under RTD_CATALOG (settings.catalog), else the root `rtd index build` recorded in index.json, else (an
        index from before roots were recorded) the index folder; admin-added images under images_home."""
        recorded = self.catalog.catalog_root if self.catalog is not None else None
        root = self.settings.catalog or (Path(recorded) if recorded else self.settings.index)
        return catalog_image(product, root, self._images_home())

    # ---- admin -------------------------------------------------------------------------------------

    async def add_product(self, product: ProductMeta, image_bytes: bytes, suffix: str, vector: np.ndarray) -> int:
        """Store the image, then append the product to the catalog's log (fsynced) before returning."""
        assert self.catalog is not None
        digest = hashlib.sha256(image_bytes).hexdigest()[:16]
        relative = Path(IMAGES_DIR) / f"{product.product_id}-{digest}{suffix}"
        meta = ProductMeta(product.product_id, product.title, product.category, str(relative))

        def store_image() -> None:
            (self.images_home / IMAGES_DIR).mkdir(exist_ok=True)
            # The image first: the record committed next must never name a missing file.
            write_atomic(self.images_home / relative, image_bytes)

        await anyio.to_thread.run_sync(store_image)
        before = await self._write(products=[meta], vectors=vector[None])
        old = before[product.product_id]
        if old is not None and old.image_path and old.image_path != str(relative):
            self._delete_stored_image(old.image_path)
        return len(self.catalog)

    async def remove_product(self, product_id: str) -> bool:
        """Remove a product (a durable log record); False when it was not there."""
        assert self.catalog is not None
        if self.catalog.get(product_id) is None:
            await self.follow()  # another replica may have added it a moment ago
            if self.catalog.get(product_id) is None:
                return False
        old = (await self._write(removed=[product_id]))[product_id]
        if old is None:
            return False
        if old.image_path:
            self._delete_stored_image(old.image_path)
        return True

    async def _write(self, **change: object) -> dict[str, ProductMeta | None]:
        """catalog.write off the event loop; once more after a reload if another process compacted."""
        async with self._write_lock:
            for attempt in (1, 2):
                try:
                    before = await anyio.to_thread.run_sync(functools.partial(self.catalog.write, **change))
                    break
                except StaleCatalog:
                    if attempt == 2:
                        raise
                    await self._reload_locked()
            self._set_catalog(self.catalog)
        if self.catalog.log_size() > self.settings.compact_log_bytes:
            self._start_compaction()
        return before

    def _start_compaction(self) -> None:
        """Fold the log into new base files in a worker thread; requests never wait for it."""
        if self._compaction is not None and not self._compaction.done():
            return

        async def run() -> None:
            try:
                generation = await anyio.to_thread.run_sync(compact, self.settings.index)
                if generation is not None:
                    log.info("catalog compacted into generation %d", generation)
                    await self.follow()
            except Exception:  # noqa: BLE001 - the log stays valid; the next write tries again
                log.exception("catalog compaction failed")

        self._compaction = asyncio.get_running_loop().create_task(run(), name="catalog-compaction")

    async def follow(self) -> None:
        """Apply other processes' writes (new log records); reload when the folder has a newer generation."""
        if self.catalog is None or self.catalog.folder is None:
            return
        try:
            stale = await anyio.to_thread.run_sync(self.catalog.refresh)
        except (OSError, UserError) as e:
            log.warning("could not follow the index folder: %s", e)
            return
        if stale:
            async with self._write_lock:
                await self._reload_locked()

    async def _follow_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.follow_interval_s)
            await self.follow()

    def _delete_stored_image(self, image_path: str) -> None:
        # Only images the admin API stored; images of the built catalog belong to the data set.
        path = Path(image_path)
        if not path.is_absolute() and path.parts[:1] == (IMAGES_DIR,):
            with contextlib.suppress(OSError):
                (self.images_home / path).unlink()

    async def reload(self) -> int:
        """Re-open the catalog from disk (a rebuilt index) without a restart."""
        assert self.pipeline is not None
        async with self._write_lock:
            return await self._reload_locked()

    async def _reload_locked(self) -> int:
        assert self.info is not None
        catalog = await anyio.to_thread.run_sync(
            functools.partial(open_catalog, self.settings.index, expect_embedder_sha256=self.info.embedder_sha256,
                              expect_head_sha256=self.head_sha256))
        self._set_catalog(catalog)
        return len(catalog)
