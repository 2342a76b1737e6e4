"""The one search pipeline: street photo -> generator -> embedder -> catalog top-K. No torch.

Every path that searches goes through it (docs/architecture.md, "The pipeline"): the service's /search and
/generate and its warm-up, `rtd index search`, `rtd eval` and the demo's check. It is opened once from an
artifacts folder (generator.onnx, embedder.onnx, model.json) and, for searching, an index folder.

The order of the stages is written once, in `plan`: a generator that yields one `(stage, args)` step at a
time and receives each stage's output. Two drivers run it: `query` calls the stages directly (batch
callers: CLI, eval, demo check) and `query_async` awaits stage callables given by the caller (the service,
whose generator and embedder sit behind micro-batchers). Both time each stage the same way.

The query is the generated product image (Sec. 5, "Recall@K": it lives in the catalog's domain), or the
photo itself (`query="photo"`, the no-generation baseline).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from index.artifacts import Artifacts, read_artifacts
from index.catalog import Catalog, Hit, read_manifest
from index.errors import UserError
from index.images import DEFAULT_MAX_PIXELS, Source, preprocess
from index.onnx import OnnxEmbedder, OnnxGenerator

QueryKind = Literal["generated", "photo"]
QUERY_KINDS: tuple[QueryKind, ...] = ("generated", "photo")
Step = tuple[str, tuple[Any, ...]]  # (stage name, its arguments)


@dataclass
class QueryResult:
    """Per photo its top-k hits; the generated images when the generator ran; milliseconds per stage."""

    hits: list[list[Hit]]
    generated: np.ndarray | None  # (B, 3, S, S) in [-1, 1]
    timings_ms: dict[str, float]


def check_index(artifacts: Artifacts, index: Path) -> dict:
    """The index folder's manifest, or UserError when it was built with another embedder than the artifacts'."""
    manifest = read_manifest(index)
    if manifest["embedder"]["sha256"] != artifacts.embedder_sha256:
        raise UserError(f"index {index} was built with another embedder (sha256 "
                        f"{manifest['embedder']['sha256'][:12]}) than {artifacts.folder} (sha256 "
                        f"{artifacts.embedder_sha256[:12]}); rebuild it with `rtd index build`")
    return manifest


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


class Pipeline:
    """The loaded artifacts (generator, embedder) and, when searching, the catalog."""

    def __init__(self, artifacts: Artifacts, generator: OnnxGenerator | None, embedder: OnnxEmbedder,
                 catalog: Catalog | None = None) -> None:
        self.artifacts = artifacts
        self.generator = generator
        self.embedder = embedder
        self.catalog = catalog
        if catalog is not None and embedder.dim is not None and catalog.dim != embedder.dim:
            raise UserError(f"index dim {catalog.dim} != embedder output dim {embedder.dim}")

    @classmethod
    def open(cls, artifacts: Path, index: Path | None = None, *, providers: Sequence[str] | None = None,
             threads: int | None = None, generator: bool = True) -> Pipeline:
        """Open the artifacts (sha256-checked) and the index (embedder-checked); UserError naming what is wrong.

        `generator=False` skips loading generator.onnx (photo queries and catalog embedding only)."""
        info = read_artifacts(artifacts)
        if index is not None:
            check_index(info, Path(index))
        gen = OnnxGenerator(info.folder / "generator.onnx", providers, threads) if generator else None
        emb = OnnxEmbedder(info.folder / "embedder.onnx", providers, threads)
        catalog = Catalog.open(index, expect_embedder_sha256=info.embedder_sha256) if index is not None else None
        return cls(info, gen, emb, catalog)

    @property
    def size(self) -> int:
        """S: the side of the square images both graphs take."""
        return self.artifacts.size

    @property
    def providers(self) -> list[str]:
        """onnxruntime's providers as loaded (the embedder's; the generator's are the same)."""
        return self.embedder.providers

    # ---- the stages --------------------------------------------------------------------------------

    def preprocess(self, source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Any image source -> (3, S, S) float32 in [-1, 1] (the shared preprocessing)."""
        return preprocess(source, self.size, max_pixels=max_pixels)

    def generate(self, photos: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) street photos -> (B, 3, S, S) generated product images, both in [-1, 1]."""
        if self.generator is None:
            raise UserError("this pipeline was opened without its generator")
        return self.generator(photos)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) images in [-1, 1] -> (B, D) unit embeddings."""
        return self.embedder(images)

    def search(self, vectors: np.ndarray, k: int, category: str | None = None) -> list[list[Hit]]:
        """Top-k catalog products per (Q, D) query, only `category` when given."""
        if self.catalog is None:
            raise UserError("this pipeline was opened without an index")
        return self.catalog.search(np.asarray(vectors, dtype=np.float32), k, category)

    # ---- the order, written once -------------------------------------------------------------------

    def plan(self, photos: np.ndarray, k: int, category: str | None = None,
             query: QueryKind = "generated") -> Generator[Step, Any, tuple[list[list[Hit]], np.ndarray | None]]:
        """generate (unless the photo is the query) -> embed -> search; yields each step, returns the result."""
        if k < 1:
            raise UserError(f"-k must be >= 1, got {k}")
        if query not in QUERY_KINDS:
            raise UserError(f"query must be one of {', '.join(QUERY_KINDS)}, got {query!r}")
        generated = (yield "generate", (photos,)) if query == "generated" else None
        vectors = yield "embed", (photos if generated is None else generated,)
        hits = yield "search", (vectors, k, category)
        return hits, generated

    def query(self, photos: np.ndarray, k: int = 10, category: str | None = None,
              query: QueryKind = "generated") -> QueryResult:
        """Run the plan on a (B, 3, S, S) batch, calling the stages directly."""
        stages: Mapping[str, Callable[..., Any]] = {"generate": self.generate, "embed": self.embed,
                                                    "search": self.search}
        plan, timings = self.plan(photos, k, category, query), {}
        try:
            name, args = next(plan)
            while True:
                start = time.perf_counter()
                out = stages[name](*args)
                timings[name] = _ms(start)
                name, args = plan.send(out)
        except StopIteration as done:
            hits, generated = done.value
        return QueryResult(hits, generated, timings)

    async def query_async(self, photos: np.ndarray, k: int, category: str | None, query: QueryKind,
                          stages: Mapping[str, Callable[..., Awaitable[Any]]]) -> QueryResult:
        """Run the plan with awaitable stages (the service's micro-batched generator and embedder)."""
        plan, timings = self.plan(photos, k, category, query), {}
        try:
            name, args = next(plan)
            while True:
                start = time.perf_counter()
                out = await stages[name](*args)
                timings[name] = _ms(start)
                name, args = plan.send(out)
        except StopIteration as done:
            hits, generated = done.value
        return QueryResult(hits, generated, timings)

    def search_image(self, source: Source, k: int = 10, category: str | None = None,
                     query: QueryKind = "generated") -> list[Hit]:
        """Top-k products for one image (a path, bytes or PIL image): preprocess, then the plan."""
        if k < 1:  # before the image is decoded
            raise UserError(f"-k must be >= 1, got {k}")
        return self.query(self.preprocess(source)[None], k, category, query).hits[0]
