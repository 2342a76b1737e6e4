"""The one search pipeline: street photo -> generator -> embedder -> catalog top-K. No torch.

Every path that searches goes through it (docs/architecture.md, "The pipeline"): the service's /search and
/generate and its warm-up, `rtd index search`, `rtd eval` and the demo's check. It is opened once from an
artifacts folder (generator.onnx, embedder.onnx, model.json) and, for searching, an index folder.

The order of the stages is written once, in `plan`: a generator that yields one `(stage, args)` step at a
time and receives each stage's output. Its first part is `feature_plan` (crop -> generate -> embed -> head:
a query's features without searching, `features`), whose first part is `generation_plan` (crop -> generate:
POST /generate). Two drivers run a plan: `run` calls the stages directly (batch callers: CLI, eval, demo
check, the parity gate, `rtd fit-head`) and `run_async` awaits stage callables given by the caller (the
service, whose generator and embedder sit behind micro-batchers). Both time each stage the same way.

Without a retrieval head (the paper's protocol) the query is the generated product image (Sec. 5,
"Recall@K": it lives in the catalog's domain) or the photo itself (`query="photo"`, the no-generation
baseline), compared with the catalog by the cosine of the frozen embedder's features. With a head
(index/runtime/head.py: `rtd fit-head` wrote head.json into the artifacts) the query is the head's mode
("fused": the generated image and the photo, embedded in one embedder call, concatenated; or either alone),
mapped by the head's query side; the catalog was embedded through its catalog side (`embed_catalog`), and
an index built without this head is refused. `Pipeline.open(..., head=False)` ignores a head: the paper's
protocol on the same artifacts (`rtd eval` reports both).

With a person crop (index/crop.py, `rtd fit-crop` wrote crop.json into the artifacts) the plan starts with a
"crop" stage: each query photo, decoded at source resolution (`prepare`: reduced to about CROP_SOURCE_SIDE
px), is cut to a square around its predicted person (index/crop.py), then preprocessed to S; the generator and
the photo's embedding both see the crop. `Pipeline.open(..., crop=False)` ignores it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image

from rtdgan.index.catalog.base import CatalogEngine, Hit, check_space
from rtdgan.index.catalog.engines import open_catalog, read_manifest
from rtdgan.index.errors import UserError
from rtdgan.index.images import DEFAULT_MAX_PIXELS, Source, decode_image, letterbox, preprocess, to_array
from rtdgan.index.runtime.artifacts import Artifacts, read_artifacts
from rtdgan.index.runtime.backends import Backend, from_env
from rtdgan.index.runtime.crop import CROP_SOURCE_SIDE, Cropper, has_crop, read_crop
from rtdgan.index.runtime.head import QUERY_INPUTS, HeadInfo, has_head, query_features, read_head
from rtdgan.index.runtime.onnx import OnnxEmbedder, OnnxGenerator, OnnxHead

log = logging.getLogger(__name__)

QueryKind = Literal["generated", "photo", "fused"]
QUERY_KINDS: tuple[QueryKind, ...] = ("generated", "photo", "fused")
FROZEN_KINDS: tuple[QueryKind, ...] = ("generated", "photo")  # without a head: the embedder's own space
Step = tuple[str, tuple[Any, ...]]  # (stage name, its arguments)
T = TypeVar("T")


@dataclass
class QueryResult:
    """Per photo its top-k hits; the generated images when the generator ran; milliseconds per stage; the
    embedder's features of the query images, by input name (before the head)."""

    hits: list[list[Hit]]
    generated: np.ndarray | None  # (B, 3, S, S) in [-1, 1]
    timings_ms: dict[str, float]
    features: dict[str, np.ndarray] = field(default_factory=dict)  # "generated" / "photo" -> (B, D)


@dataclass
class QueryFeatures:
    """A query batch's features without searching (`Pipeline.features`): the photos as the generator and the
    embedder see them, the generated images when the query needs them, the embedder's features per input, the
    vectors `search` takes, and milliseconds per stage."""

    photos: np.ndarray  # (B, 3, S, S) in [-1, 1]: with a person crop, each cut to its person
    generated: np.ndarray | None  # (B, 3, S, S) in [-1, 1], when the query uses the generated image
    features: dict[str, np.ndarray]  # "generated" / "photo" -> (B, D): the embedder's features (before the head)
    # (B, dim): what `search` takes for this query: the head's query vectors for its mode, without a head the
    # one input's features; None when this pipeline cannot search with the query (a fused query without a
    # head, a kind other than the head's mode).
    vectors: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)


def check_index(artifacts: Artifacts, index: Path, head: HeadInfo | None = None) -> dict:
    """The index folder's manifest, or UserError when its vectors are not in the space of the artifacts'
    embedder and `head` (built with another embedder, through another head, with a head and now without)."""
    manifest = read_manifest(index)
    check_space(manifest, Path(index), artifacts.embedder_sha256, head.sha256 if head is not None else None)
    return manifest


def backend_mismatch(catalog: CatalogEngine | None, backend: Backend) -> str | None:
    """Why the catalog's vectors and this backend's queries may differ (the index was embedded on another backend
    or precision, as index.json records), or None. Not refused: the parity gate measured the
    candidate against an fp32-built gallery too; an index embedded at a lower precision and queried at another is
    a choice to make knowingly (docs/deployment.md, "Inference backends")."""
    built = getattr(catalog, "embedder_backend", None)
    if not built or built == backend.describe():
        return None
    return (f"the index was embedded on {built.get('backend')} {built.get('precision')}, queries run on "
            f"{backend.name} {backend.precision}: rebuild the index on this backend (`rtd index build --backend "
            f"{backend.name} --precision {backend.precision}`) to compare like with like")


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


class Pipeline:
    """The loaded artifacts (generator, embedder, and the retrieval head if any) and, when searching, the catalog."""

    def __init__(self, artifacts: Artifacts, generator: OnnxGenerator | None, embedder: OnnxEmbedder,
                 catalog: CatalogEngine | None = None, head: HeadInfo | None = None,
                 head_sessions: tuple[OnnxHead, OnnxHead] | None = None, cropper: Cropper | None = None) -> None:
        self.artifacts = artifacts
        self.cropper = cropper
        self.generator = generator
        self.embedder = embedder
        self.head = head
        self.head_query, self.head_catalog = head_sessions if head_sessions is not None else (None, None)
        if (head is None) != (head_sessions is None):
            raise ValueError("a head needs both its sessions, and sessions their head.json")
        self.catalog = catalog
        if catalog is not None and self.dim is not None and catalog.dim != self.dim:
            raise UserError(f"index dim {catalog.dim} != the {'head' if head else 'embedder'}'s output dim {self.dim}")

    @classmethod
    def open(cls, artifacts: Path, index: Path | None = None, *, providers: Sequence[str] | None = None,
             threads: int | None = None, generator: bool = True, head: bool = True, crop: bool = True,
             backend: Backend | None = None) -> Pipeline:
        """Open the artifacts (sha256-checked), their head (unless `head=False`) and the index (checked to be in
        their space); UserError naming what is wrong.

        `generator=False` skips loading generator.onnx (photo queries and catalog embedding only); `crop=False`
        ignores a person crop (crop.json). `backend` runs the generator, embedder and head (index/backends.py);
        None: $RTD_BACKEND / $RTD_PRECISION, else onnxruntime fp32 on `providers` with `threads`."""
        backend = backend if backend is not None else from_env(threads=threads, providers=providers)
        info = read_artifacts(artifacts)
        head_info = read_head(info) if head and has_head(info) else None
        if index is not None:
            check_index(info, Path(index), head_info)
        gen = OnnxGenerator(info.folder / "generator.onnx", backend=backend) if generator else None
        emb = OnnxEmbedder(info.folder / "embedder.onnx", backend=backend)
        sessions = head_info.sessions(backend=backend) if head_info is not None else None
        # The crop is a tiny graph whose boxes decide what the models see: always onnxruntime fp32, the reference.
        cropper = (Cropper(read_crop(info), backend.providers, backend.threads) if crop and has_crop(info)
                   else None)
        catalog = (open_catalog(index, expect_embedder_sha256=info.embedder_sha256,
                                 expect_head_sha256=head_info.sha256 if head_info else None)
                   if index is not None else None)
        if (why := backend_mismatch(catalog, backend)) is not None:
            log.warning("%s", why)
        return cls(info, gen, emb, catalog, head_info, sessions, cropper)

    @property
    def dim(self) -> int | None:
        """The dim of the vectors the catalog holds: the head's shared space, else the embedder's output."""
        if self.head is not None:
            return int(self.head.doc["embedding_dim"])
        return self.embedder.dim

    @property
    def query_kinds(self) -> tuple[QueryKind, ...]:
        """The queries this pipeline answers: the head's mode with a head, else generated and photo."""
        return (self.head.mode,) if self.head is not None else FROZEN_KINDS  # type: ignore[return-value]

    @property
    def default_query(self) -> QueryKind:
        """The head's query with a head; else the generated image (the paper's protocol)."""
        return self.query_kinds[0]

    def space(self) -> dict:
        """What the catalog's vectors must have been made with (recorded by `rtd index build`)."""
        return {"embedder_sha256": self.artifacts.embedder_sha256,
                "head": self.head.describe() if self.head is not None else None}

    @property
    def size(self) -> int:
        """S: the side of the square images both graphs take."""
        return self.artifacts.size

    @property
    def providers(self) -> list[str]:
        """onnxruntime's providers as loaded (the embedder's; the generator's are the same)."""
        return self.embedder.providers

    @property
    def backend(self) -> Backend:
        """What the generator, embedder and head run on (index/backends.py)."""
        return self.embedder.backend

    # ---- the stages --------------------------------------------------------------------------------

    def preprocess(self, source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Any image source -> (3, S, S) float32 in [-1, 1] (the shared preprocessing)."""
        return preprocess(source, self.size, max_pixels=max_pixels)

    def prepare(self, source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray | Image.Image:
        """A query photo for `plan`: preprocessed to (3, S, S), or, with a person crop, decoded at source
        resolution bounded to about CROP_SOURCE_SIDE px (the crop stage cuts it and preprocesses it to S)."""
        if self.cropper is None:
            return self.preprocess(source, max_pixels=max_pixels)
        return decode_image(source, max_pixels=max_pixels, reduce_to=CROP_SOURCE_SIDE)

    def batch(self, prepared: Sequence[np.ndarray | Image.Image]) -> np.ndarray | list[Image.Image]:
        """Photos from `prepare` -> what `plan` takes: a (B, 3, S, S) batch, or with a person crop the decoded
        photos (its crop stage cuts them)."""
        return list(prepared) if self.cropper is not None else np.stack(prepared)  # type: ignore[return-value]

    def crop(self, photos: Sequence[Image.Image] | np.ndarray) -> np.ndarray:
        """Decoded photos (or a (B, 3, H, W) batch in [-1, 1]) -> (B, 3, S, S): each cut to a square around its
        person (the person crop), else only preprocessed."""
        if self.cropper is not None:
            return self.cropper(photos, self.size)
        if isinstance(photos, np.ndarray):
            return photos
        return np.stack([to_array(letterbox(img, self.size)) for img in photos])

    def generate(self, photos: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) street photos -> (B, 3, S, S) generated product images, both in [-1, 1]."""
        if self.generator is None:
            raise UserError("this pipeline was opened without its generator")
        return self.generator(photos)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) images in [-1, 1] -> (B, D) unit embeddings."""
        return self.embedder(images)

    def apply_head(self, features: np.ndarray, inputs: Sequence[str]) -> np.ndarray:
        """(len(inputs) * B, D) embedder features, one block of B per input in that order (as `plan` embeds
        them: one embedder call) -> (B, E) query vectors through the head's query side."""
        if self.head_query is None:
            raise UserError("this pipeline has no retrieval head")
        blocks = np.split(np.asarray(features, dtype=np.float32), len(inputs))
        return self.head_query(query_features(inputs, dict(zip(inputs, blocks, strict=True))))

    def embed_catalog(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) catalog product images -> (B, dim) catalog vectors: the embedder, then the head's catalog
        side when there is a head (what `rtd index build` and the admin API store)."""
        return self.catalog_vectors(self.embed(images))

    def catalog_vectors(self, features: np.ndarray) -> np.ndarray:
        """(B, D) embedder features of catalog images -> what the catalog stores (the head's catalog side, if any)."""
        return self.head_catalog(features) if self.head_catalog is not None else features

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[Hit]]:
        """Top-k catalog products per (Q, D) query, only `category` when given."""
        if self.catalog is None:
            raise UserError("this pipeline was opened without an index")
        return self.catalog.search(np.asarray(vectors, dtype=np.float32), k, category)

    def stages(self) -> Mapping[str, Callable[..., Any]]:
        """Each stage of `plan` by name, called directly."""
        return {"crop": self.crop, "generate": self.generate, "embed": self.embed, "head": self.apply_head,
                "search": self.search}

    # ---- the order, written once -------------------------------------------------------------------

    def _query_kind(self, query: QueryKind | None, *, search: bool) -> QueryKind:
        """`query`, or the default, checked: a search takes `query_kinds` (with a head only its mode, without
        one the frozen kinds); features alone (`search=False`) any kind (the embedder's features of its inputs)."""
        query = query or self.default_query
        kinds = self.query_kinds if search else QUERY_KINDS
        if query not in kinds:
            raise UserError(f"query must be one of {', '.join(kinds)} with "
                            f"{'this head' if self.head else 'no retrieval head'}, got {query!r}")
        return query

    def crop_plan(self, photos: np.ndarray | Sequence[Image.Image]) -> Generator[Step, Any, np.ndarray]:
        """The crop step (with a person crop); returns the (B, 3, S, S) photos the models see. Decoded photos
        without a crop are only preprocessed here, not a stage."""
        if self.cropper is not None:
            return (yield "crop", (photos,))
        return photos if isinstance(photos, np.ndarray) else self.crop(photos)

    def generation_plan(self, photos: np.ndarray | Sequence[Image.Image]) -> Generator[
            Step, Any, tuple[np.ndarray, np.ndarray]]:
        """crop (with a person crop) -> generate; returns (the photos the generator saw, the generated images):
        what POST /generate serves."""
        photos = yield from self.crop_plan(photos)
        generated = yield "generate", (photos,)
        return photos, generated

    def feature_plan(self, photos: np.ndarray | Sequence[Image.Image],
                     query: QueryKind | None = None) -> Generator[Step, Any, QueryFeatures]:
        """crop (with a person crop) -> generate (unless only the photo is the query) -> embed (every query image
        of the batch in one call) -> head (with a head, for its mode); yields each step, returns the features."""
        query = self._query_kind(query, search=False)
        inputs = QUERY_INPUTS[query]
        if "generated" in inputs:
            photos, generated = yield from self.generation_plan(photos)
        else:
            photos, generated = (yield from self.crop_plan(photos)), None
        images = {"generated": generated, "photo": photos}
        batch = images[inputs[0]] if len(inputs) == 1 else np.concatenate([images[name] for name in inputs])
        embedded = yield "embed", (batch,)
        features = dict(zip(inputs, np.split(np.asarray(embedded), len(inputs)), strict=True))
        if self.head is not None:
            vectors = (yield "head", (embedded, inputs)) if query == self.head.mode else None
        else:
            vectors = embedded if len(inputs) == 1 else None
        return QueryFeatures(photos, generated, features, vectors)

    def plan(self, photos: np.ndarray | Sequence[Image.Image], k: int, category: str | None = None,
             query: QueryKind | None = None) -> Generator[Step, Any, tuple[list[list[Hit]], np.ndarray | None,
                                                                            dict[str, np.ndarray]]]:
        """`feature_plan` (crop -> generate -> embed -> head) -> search; yields each step, returns the result.
        `photos`: a (B, 3, S, S) batch, or decoded photos (`prepare`); `query` None: the default."""
        if k < 1:
            raise UserError(f"-k must be >= 1, got {k}")
        found = yield from self.feature_plan(photos, self._query_kind(query, search=True))
        hits = yield "search", (found.vectors, k, category)
        return hits, found.generated, found.features

    def run(self, plan: Generator[Step, Any, T]) -> tuple[T, dict[str, float]]:
        """Drive a plan (`plan`, `feature_plan`, `generation_plan`) calling the stages directly: its result and
        milliseconds per stage."""
        return self._drive(plan, self.stages())

    async def run_async(self, plan: Generator[Step, Any, T],
                        stages: Mapping[str, Callable[..., Awaitable[Any]]]) -> tuple[T, dict[str, float]]:
        """Drive a plan with awaitable stages (the service's micro-batched generator and embedder); a stage the
        caller does not give (the head: a small matrix product) is called directly."""
        direct, timings = self.stages(), {}
        try:
            name, args = next(plan)
            while True:
                start = time.perf_counter()
                out = await stages[name](*args) if name in stages else direct[name](*args)
                timings[name] = _ms(start)
                name, args = plan.send(out)
        except StopIteration as done:
            return done.value, timings

    @staticmethod
    def _drive(plan: Generator[Step, Any, T], stages: Mapping[str, Callable[..., Any]]) -> tuple[T, dict[str, float]]:
        timings: dict[str, float] = {}
        try:
            name, args = next(plan)
            while True:
                start = time.perf_counter()
                out = stages[name](*args)
                timings[name] = _ms(start)
                name, args = plan.send(out)
        except StopIteration as done:
            return done.value, timings

    def features(self, photos: np.ndarray | Sequence[Image.Image], query: QueryKind | None = None) -> QueryFeatures:
        """A batch's query features without searching (`feature_plan`, the stages called directly): what the
        served query computes before its search, for the parity gate (index/parity.py) and `rtd fit-head`."""
        found, timings = self.run(self.feature_plan(photos, query))
        found.timings_ms = timings
        return found

    def query(self, photos: np.ndarray | Sequence[Image.Image], k: int = 10, category: str | None = None,
              query: QueryKind | None = None) -> QueryResult:
        """Run the plan on a (B, 3, S, S) batch (or decoded photos), calling the stages directly."""
        (hits, generated, features), timings = self.run(self.plan(photos, k, category, query))
        return QueryResult(hits, generated, timings, features)

    async def query_async(self, photos: np.ndarray | Sequence[Image.Image], k: int, category: str | None, query: QueryKind | None,
                          stages: Mapping[str, Callable[..., Awaitable[Any]]]) -> QueryResult:
        """Run the plan with awaitable stages (`run_async`)."""
        (hits, generated, features), timings = await self.run_async(self.plan(photos, k, category, query), stages)
        return QueryResult(hits, generated, timings, features)

    def search_image(self, source: Source, k: int = 10, category: str | None = None,
                     query: QueryKind | None = None) -> list[Hit]:
        """Top-k products for one image (a path, bytes or PIL image): preprocess, then the plan."""
        if k < 1:  # before the image is decoded
            raise UserError(f"-k must be >= 1, got {k}")
        photo = self.prepare(source)
        return self.query(photo[None] if isinstance(photo, np.ndarray) else [photo], k, category, query).hits[0]
