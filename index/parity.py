"""The backend parity gate: a backend is measured against onnxruntime fp32 on real photos, and the
service refuses a backend whose recorded parity is missing or failing. No torch.

`measure` runs the same photos through two pipelines over the same artifacts (index/pipeline.py): the reference
(onnxruntime fp32, what `rtd export` checked against PyTorch) and the candidate backend. It compares what the
service does with them: the generated images, the query vectors (the generated image's embedding, or the
retrieval head's query side) and the gallery's vectors (`embed_catalog`), and the top-k ranking of a small
gallery — both with the candidate's own gallery (an index rebuilt on the candidate) and with the reference's
(an index built on fp32, queried on the candidate: the usual case after switching a service's backend).

The gate judges retrieval, not the largest pixel difference (OpenVINO bf16, measured at the demo size:
embedder cosine >= 0.995 while one generated pixel moved by 0.32 of the [-1, 1] range, mean 0.001). Thresholds:

  embedding cosine, every query and gallery vector      >= MIN_COSINE (0.99)
  top-k agreement (|top-k ∩ reference top-k| / k), mean >= MIN_TOPK_AGREEMENT (0.9), both gallery cases;
                                                        k = 10, or half the gallery when it has under 20 images
  generated image, mean |difference| on [-1, 1]         <= MAX_GENERATED_MEAN_ABS (0.01); the max is reported only

The result is written atomically (index/files.py) as `parity-<backend>-<precision>.json` into the artifacts'
version folder, beside the graphs it was measured on: a new `rtd export` starts without any, and a record of
other graphs (another embedder, generator or head; sha256 recorded; for int8 also the int8 graphs of
`rtd quantize`, index/quantize.py) is refused like a missing one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from PIL import Image

from rtdgan.index.configs import opt
from rtdgan.index.errors import ImageError, UserError
from rtdgan.index.files import is_image_file, write_atomic
from rtdgan.index.images import decode_image, preprocess
from rtdgan.index.runtime.artifacts import Artifacts, portable_path, read_artifacts, recorded_path
from rtdgan.index.runtime.backends import KINDS, Backend, make_backend
from rtdgan.index.runtime.crop import CROP_SOURCE_SIDE, has_crop
from rtdgan.index.runtime.head import has_head, read_head

if TYPE_CHECKING:
    from rtdgan.index.pipeline import Pipeline

T = TypeVar("T")
Photos = np.ndarray | Sequence[Image.Image]  # a (N, 3, S, S) batch, or decoded photos (`load_photos`)

PARITY_FORMAT = 1
MIN_COSINE = 0.99
MIN_TOPK_AGREEMENT = 0.9
MAX_GENERATED_MEAN_ABS = 0.01
TOP_K = 10
BATCH = 8  # images per call while measuring
GATE_PHOTOS = 32  # photos a backend is measured on (`--limit`; the gate `rtd export` and `rtd fit-head` run)
UNCHECKED_HINT = "RTD_BACKEND_UNCHECKED=1 / --allow-unchecked-backend skips this check"


@dataclass(frozen=True)
class CheckConfig:
    """`rtd check-backend`: its flags are derived from these fields (index/configs.py)."""

    artifacts: Path = opt(help="artifacts folder from `rtd export` (the parity record is written into its version folder)")
    backend: str | None = opt(None, "backend to check (onnxruntime, openvino); none: every available one but "
                                    "the reference")
    precision: str | None = opt(None, "precision to check (auto, fp32, bf16, fp16, int8); none: each the backend "
                                      "runs here (int8 only where `rtd quantize` wrote int8 graphs)")
    photos: Path | None = opt(None, "street photos (a folder or one image); none: the images of model.json's "
                                    "generator data folder")
    gallery: Path | None = opt(None, "catalog images ranked by the queries (a folder); none: the photos themselves")
    limit: int = opt(GATE_PHOTOS, "photos used (the first N files, sorted)")
    gallery_limit: int = opt(200, "gallery images used (the first N files, sorted)")
    threads: int | None = opt(None, "CPU threads per graph (both backends)")


def parity_path(folder: Path, backend: Backend) -> Path:
    """Where the parity of `backend` on the graphs in `folder` (an artifacts version folder) is recorded."""
    return Path(folder) / f"parity-{backend.key}.json"


def _image_files(path: Path, limit: int, spread: bool = False) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"no such image or folder: {path}")
    files = sorted(p for p in path.rglob("*") if is_image_file(p))
    if spread and len(files) > limit:  # evenly over the sorted names: many products, not the first few
        return [files[int(i)] for i in np.linspace(0, len(files) - 1, limit)]
    return files[:limit]


def _read_images(path: Path, limit: int, what: str, spread: bool, read: Callable[[Path], T]) -> list[T]:
    """`read` of the first `limit` readable images under `path` (`spread`: `limit` evenly spaced over the sorted
    names); UserError when none is readable."""
    if limit < 1:
        raise UserError(f"--{'gallery-limit' if what == 'gallery images' else 'limit'} must be >= 1, got {limit}")
    images = []
    for file in _image_files(path, limit, spread):
        try:
            images.append(read(file))
        except ImageError:
            continue  # a corrupt file: parity is measured on the readable ones
    if not images:
        raise UserError(f"no readable {what} under {path}")
    return images


def load_images(path: Path, size: int, limit: int, what: str, spread: bool = False) -> np.ndarray:
    """(N, 3, S, S): the first `limit` readable images under `path` (`spread`: `limit` evenly spaced over the
    sorted names) through the shared preprocessing."""
    return np.stack(_read_images(path, limit, what, spread, lambda file: preprocess(file, size)))


def load_photos(path: Path, info: Artifacts, limit: int) -> np.ndarray | list[Image.Image]:
    """Query photos as the service takes them (index/pipeline.py `prepare`): a (N, 3, S, S) batch, or, when the
    artifacts have a person crop, the photos decoded at about CROP_SOURCE_SIDE px (the crop stage cuts them)."""
    if not has_crop(info):
        return load_images(path, info.size, limit, "photos")
    return _read_images(path, limit, "photos", False, lambda file: decode_image(file, reduce_to=CROP_SOURCE_SIDE))


def default_photos(info: Artifacts, artifacts: Path) -> Path:
    """The photos model.json records, found from ARTIFACTS: those `rtd export` measured parity on
    (`parity_photos`: the demo's shop, ../data), else the generator's training data; UserError naming --photos
    when neither is a folder here."""
    recorded = [info.model.get("parity_photos"), info.model.get("generator", {}).get("data")]
    for path in (recorded_path(artifacts, r) for r in recorded):
        if path is not None and path.is_dir():
            return path
    what = ", ".join(str(r) for r in recorded if r)
    raise UserError(f"no photos to measure on: model.json records {f'{what}, not here' if what else 'none'}; "
                    f"pass --photos DIR (a folder of street photos)")


def source_name(path: Path | str, artifacts: Path) -> str:
    """Where measured photos came from, as a parity record keeps it: relative to ARTIFACTS when they lie beside
    it, else the folder's name (no absolute path of this machine in the artifacts)."""
    return portable_path(path, artifacts) or Path(path).name


def outputs(pipeline: Pipeline, photos: Photos, gallery: np.ndarray) -> dict[str, np.ndarray]:
    """What the service computes from the photos and what an index stores for the gallery, BATCH at a time: the
    served query's features (`Pipeline.features`: the person crop when the artifacts have one, generator,
    embedder, the head's query side), and the gallery's vectors (`embed_catalog`).

    Returns the generated images, the embedder's features of the generated images and of the photos (both
    inputs the embedder meets, also when the served query uses one), the query vectors and the gallery's
    vectors. `photos`: a (N, 3, S, S) batch, or decoded photos as `Pipeline.prepare` gives them (`load_photos`)."""
    out: dict[str, list[np.ndarray]] = {"generated": [], "generated_features": [], "photo_features": [], "query": []}
    for i in range(0, len(photos), BATCH):
        chunk = photos[i:i + BATCH]
        served = pipeline.features(chunk)
        generated = served if served.generated is not None else pipeline.features(chunk, "generated")
        photo = served if "photo" in served.features else pipeline.features(chunk, "photo")
        out["generated"].append(generated.generated)
        out["generated_features"].append(generated.features["generated"])
        out["photo_features"].append(photo.features["photo"])
        out["query"].append(served.vectors)
    joined = {name: np.concatenate(parts) for name, parts in out.items()}
    return {"generated": joined["generated"],
            "features": np.concatenate([joined["generated_features"], joined["photo_features"]]),
            "query": joined["query"],
            "gallery": np.concatenate([pipeline.embed_catalog(gallery[i:i + BATCH])
                                       for i in range(0, len(gallery), BATCH)])}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)


def _top(query: np.ndarray, gallery: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) gallery rows by descending inner product (the catalog's cosine on unit vectors)."""
    return np.argsort(-(query @ gallery.T), axis=1, kind="stable")[:, :k]


def _agreement(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return np.array([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)])


def measure(artifacts: Path, backend: Backend, photos: Photos, gallery: np.ndarray | None = None,
            reference: Backend | None = None) -> dict:
    """The figures of `backend` against `reference` (default onnxruntime fp32) and whether they pass. No
    `gallery`: the photos themselves, through the shared preprocessing (decoded photos are letterboxed to S)."""
    from rtdgan.index.pipeline import Pipeline

    reference = reference or Backend(threads=backend.threads)
    ref_pipeline = Pipeline.open(artifacts, backend=reference)
    if gallery is None:
        gallery = photos if isinstance(photos, np.ndarray) else np.stack([ref_pipeline.preprocess(p) for p in photos])
    ref = outputs(ref_pipeline, photos, gallery)
    got = outputs(Pipeline.open(artifacts, backend=backend), photos, gallery)
    k = min(TOP_K, max(1, len(gallery) // 2))  # a top-k of most of the gallery would agree by construction
    want = _top(ref["query"], ref["gallery"], k)
    own = _agreement(_top(got["query"], got["gallery"], k), want)  # index rebuilt on the backend
    mixed = _agreement(_top(got["query"], ref["gallery"], k), want)  # fp32 index, queries on the backend
    diff = np.abs(got["generated"] - ref["generated"])
    cos = np.concatenate([_cosine(got["query"], ref["query"]), _cosine(got["gallery"], ref["gallery"])])
    figures = {
        "generated_mean_abs": float(diff.mean()), "generated_max_abs": float(diff.max()),
        "embedder_min_cosine": float(_cosine(got["features"], ref["features"]).min()),
        "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
        "topk_agreement_mean": float(own.mean()), "topk_agreement_min": float(own.min()),
        "topk_agreement_fp32_index_mean": float(mixed.mean()), "topk_agreement_fp32_index_min": float(mixed.min()),
    }
    failures = []
    # `not x >= t` is also true for NaN: a backend that outputs NaN fails.
    if not figures["min_cosine"] >= MIN_COSINE:
        failures.append(f"embedding cosine {figures['min_cosine']:.4f} < {MIN_COSINE}")
    for key in ("topk_agreement_mean", "topk_agreement_fp32_index_mean"):
        if not figures[key] >= MIN_TOPK_AGREEMENT:
            failures.append(f"{key.replace('topk', f'top-{k}').replace('_', ' ')} {figures[key]:.3f} < {MIN_TOPK_AGREEMENT}")
    if not figures["generated_mean_abs"] <= MAX_GENERATED_MEAN_ABS:
        failures.append(f"generated mean |diff| {figures['generated_mean_abs']:.4f} > {MAX_GENERATED_MEAN_ABS}")
    return {"figures": figures, "k": k, "failures": failures, "passed": not failures}


def _identity(info: Artifacts, backend: Backend) -> dict:
    """The graphs a record is of: the artifacts' fp32 graphs and head, and for int8 the int8 graphs (int8.json)."""
    from rtdgan.index.runtime.quantize import int8_identity

    head = read_head(info) if has_head(info) else None
    identity = {"version": info.folder.name, "generator_sha256": info.model["generator"]["onnx_sha256"],
                "embedder_sha256": info.embedder_sha256, "head_sha256": head.sha256 if head is not None else None}
    if backend.precision == "int8":
        identity["int8_sha256"] = int8_identity(info.folder)
    return identity


def _engines() -> dict:
    import onnxruntime

    engines = {"onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        engines["openvino"] = openvino.__version__
    except ImportError:
        pass
    return engines


def check_backend(artifacts: Path, backend: Backend, photos: Photos, gallery: np.ndarray | None = None,
                  sources: dict | None = None) -> dict:
    """Measure `backend` and record the result in the artifacts' version folder; the record."""
    info = read_artifacts(artifacts)
    result = measure(artifacts, backend, photos, gallery)
    doc = {"format_version": PARITY_FORMAT, **backend.describe(), "reference": "onnxruntime-fp32",
           "artifacts": _identity(info, backend), "passed": result["passed"], "failures": result["failures"],
           "figures": result["figures"],
           "thresholds": {"min_cosine": MIN_COSINE, "topk_agreement_mean": MIN_TOPK_AGREEMENT,
                          "generated_mean_abs": MAX_GENERATED_MEAN_ABS},
           "inputs": {"photos": len(photos), "gallery": len(photos if gallery is None else gallery),
                      "k": result["k"], **(sources or {})},
           "engines": _engines(), "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_atomic(parity_path(info.folder, backend), (json.dumps(doc, indent=1) + "\n").encode())
    return doc


def require_parity(artifacts: Path, backend: Backend) -> dict | None:
    """The passing parity record of `backend` on these artifacts (None for the reference, which needs none);
    UserError (one line, naming `rtd check-backend`) when it is missing, of other graphs, or failing."""
    if backend.is_reference:
        return None
    info = read_artifacts(artifacts)
    path = parity_path(info.folder, backend)
    command = (f"`rtd check-backend --artifacts {artifacts} --backend {backend.name} "
               f"--precision {backend.precision}`")
    if not path.is_file():
        raise UserError(f"backend {backend.key} has no recorded parity for {info.folder}: run {command} "
                        f"({UNCHECKED_HINT})")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        passed, failures, measured = doc["passed"], doc.get("failures", []), doc["artifacts"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a parity record ({type(e).__name__}: {e}); run {command}") from e
    identity = _identity(info, backend)
    stale = [name for name in identity if name != "version" and measured.get(name) != identity[name]]
    if stale:
        raise UserError(f"{path} was measured on other graphs ({', '.join(s.replace('_sha256', '') for s in stale)} "
                        f"differ): run {command} ({UNCHECKED_HINT})")
    if passed is not True:
        raise UserError(f"backend {backend.key} failed its parity check ({'; '.join(failures) or 'see ' + str(path)}); "
                        f"fix it or choose another backend, then run {command} ({UNCHECKED_HINT})")
    return doc


def candidates(cfg: CheckConfig) -> list[Backend]:
    """The backends `rtd check-backend` measures: the one asked for, else every one this machine runs (not
    the reference), at each precision it runs here (int8 unasked only where `rtd quantize` wrote graphs)."""
    from rtdgan.index.runtime.artifacts import resolve_artifacts
    from rtdgan.index.runtime.quantize import read_record

    names = [cfg.backend] if cfg.backend is not None else list(KINDS)
    found: list[Backend] = []
    errors: list[str] = []
    for name in names:
        if name not in KINDS:
            make_backend(name)  # UserError: unknown backend, naming the known ones
        for precision in [cfg.precision] if cfg.precision is not None else KINDS[name].precisions:
            try:
                backend = make_backend(name, precision, threads=cfg.threads)
            except UserError as e:  # not runnable here (no bf16 units, no TensorRT, no OpenVINO)
                errors.append(str(e))
                continue
            if cfg.precision is None and precision == "int8" and read_record(resolve_artifacts(cfg.artifacts)) is None:
                continue  # not quantized: nothing to check unless asked (then the load says how to quantize)
            if not backend.is_reference and backend not in found:
                found.append(backend)
    if not found:
        if errors and (cfg.backend is not None or cfg.precision is not None):
            raise UserError(errors[-1])
        raise UserError("no backend to check besides the reference (onnxruntime fp32): install OpenVINO "
                        "(pip install 'rtdgan[cpu]') or name one with --backend")
    return found


def table(docs: list[dict]) -> str:
    """The check's results, one row per backend."""
    rows = ["| backend | precision | generated mean / max abs | min cosine | top-k agreement (own / fp32 index) | "
            "passed |", "|---|---|---|---|---|---|"]
    for d in docs:
        f = d["figures"]
        rows.append(f"| {d['backend']} | {d['precision']} | {f['generated_mean_abs']:.2e} / {f['generated_max_abs']:.2e}"
                    f" | {f['min_cosine']:.5f} | {f['topk_agreement_mean']:.3f} / "
                    f"{f['topk_agreement_fp32_index_mean']:.3f} | "
                    f"{'yes' if d['passed'] else 'NO: ' + '; '.join(d['failures'])} |")
    return "\n".join(rows)


def _check_each(artifacts: Path, chosen: list[Backend], photos: Photos, gallery: np.ndarray | None,
                sources: dict, who: str) -> list[dict]:
    docs = []
    for backend in chosen:
        print(f"{who}: {backend.key} on {len(photos)} photos ...", file=sys.stderr)
        docs.append(check_backend(artifacts, backend, photos, gallery, sources))
    return docs


def run_check(cfg: CheckConfig) -> list[dict]:
    """`rtd check-backend`: measure each candidate, record it, print the table; the records."""
    info = read_artifacts(cfg.artifacts)
    chosen = candidates(cfg)  # an unknown or unrunnable backend fails before any image is read
    photos_from = cfg.photos if cfg.photos is not None else default_photos(info, cfg.artifacts)
    photos = load_photos(photos_from, info, cfg.limit)
    gallery = load_images(cfg.gallery, info.size, cfg.gallery_limit, "gallery images") if cfg.gallery else None
    sources = {"photos_from": source_name(photos_from, cfg.artifacts),
               "gallery_from": source_name(cfg.gallery or photos_from, cfg.artifacts)}
    docs = _check_each(cfg.artifacts, chosen, photos, gallery, sources, "rtd check-backend")
    print(table(docs))
    return docs


def gate_after_write(artifacts: Path, photos: Photos, photos_from: str, who: str,
                     threads: int | None = None) -> list[dict]:
    """The gate as the commands that write graphs run it once they have (`rtd export`, `rtd fit-head`: the
    gate at export): every backend this machine runs besides the reference, measured on `photos`
    (the photos themselves the gallery) and recorded, so a service on any of them starts without a manual
    `rtd check-backend`; the table on stderr. None to check (no OpenVINO): one line, nothing recorded. A
    failing backend is recorded as failing (the service refuses it); the write itself stands."""
    try:
        chosen = candidates(CheckConfig(artifacts=artifacts, threads=threads))
    except UserError as e:
        print(f"{who}: parity gate: nothing checked ({e})", file=sys.stderr)
        return []
    name = source_name(photos_from, artifacts)
    docs = _check_each(artifacts, chosen, photos, None, {"photos_from": name, "gallery_from": name},
                       f"{who}: parity gate")
    print(table(docs), file=sys.stderr)
    return docs
