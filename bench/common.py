"""What the scripts under bench/ share: the checkout's root, a description of the machine to label figures with,
timing helpers, vector worlds for catalog benchmarks, `rtd serve` driven over loopback HTTP, the paper-size
generator, and the synthetic worlds and exports the experiments (bench/experiments/) start from.

Every script puts the checkout first on `sys.path` (so it runs without installing) and imports this module as
`bench.common`; no script imports another. Heavy imports (torch, httpx, the product's training code) happen inside
the functions that need them, so a benchmark that does not use them does not pay for them.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    import argparse

    import httpx

    from rtdgan.index.catalog.file import Catalog
    from rtdgan.training.synth import SynthConfig

K = TypeVar("K")
ROOT = Path(__file__).resolve().parents[1]  # the checkout
PRETRAINED = ROOT / "models" / "pretrained" / "rtdgan-demo-64.pt"  # the committed demo generator


# ---- the machine ----------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name (`lscpu`, else /proc/cpuinfo, else the platform's processor string)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine() -> str:
    """One line for a figure's label: the CPU model, how many CPUs this process may use, the load right now."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_model()}, {cpus} CPUs, load average {os.getloadavg()[0]:.1f}"


def passive_openmp() -> None:
    """Sleeping OpenMP workers: spinning ones (FAISS) fight the other threads and processes for the cores, and
    single-query latencies swing 10x between runs on a shared machine. Call before FAISS loads; a server started
    as a subprocess inherits it."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def say(text: str) -> None:
    """A progress line on stderr, prefixed with the script's name."""
    print(f"{Path(sys.argv[0]).stem}: {text}", file=sys.stderr, flush=True)


def write_json(path: Path | None, doc: object) -> str:
    """`doc` as indented JSON (values JSON does not know as strings), also written to `path` unless it is None."""
    text = json.dumps(doc, indent=1, default=str)
    if path is not None:
        path.write_text(text + "\n")
    return text


# ---- timing ---------------------------------------------------------------------------------------------

def ms_since(start: float) -> float:
    """Milliseconds since `start` (a `time.perf_counter()` reading)."""
    return (time.perf_counter() - start) * 1000


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def interleaved_ms(calls: dict[K, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[K, list[float]]:
    """Milliseconds of each call, the calls taking turns `repeats` times after `warmup` untimed rounds, so load
    from other processes hits all of them alike and their ratios stay fair on a shared machine."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    times: dict[K, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[name].append(ms_since(start))
    return times


def median_ms(calls: dict[K, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[K, float]:
    """The median of `interleaved_ms` per call."""
    return {name: float(np.median(t)) for name, t in interleaved_ms(calls, repeats, warmup).items()}


# ---- vector worlds for the catalog benchmarks -----------------------------------------------------------

def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, n: int, dim: int, noise: float = 0.6) -> np.ndarray:
    """(n, D) unit vectors around n/100 centres (about 100 products per centre: a garment type in a colour, so a
    top-60 mostly stays in one cluster), closer to real image embeddings than uniform ones."""
    centres = rng.standard_normal((max(10, n // 100), dim), dtype=np.float32)
    return unit(centres[rng.integers(0, len(centres), n)] + noise * rng.standard_normal((n, dim), dtype=np.float32))


def make_data(kind: str, n: int, queries: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) catalog vectors and (Q, D) queries, all unit norm. "random": uniform on the sphere, the worst case
    for approximate search; "clustered": `clustered`, each query near a stored product (cosine ~0.9)."""
    if kind == "random":
        return unit(rng.standard_normal((n, dim), dtype=np.float32)), unit(rng.standard_normal((queries, dim), dtype=np.float32))
    base = clustered(rng, n, dim)
    picked = base[rng.integers(0, n, queries)]
    noise = rng.standard_normal(picked.shape, dtype=np.float32)
    return base, unit(picked + 0.5 * unit(noise))


def time_searches(catalogs: dict[str, Catalog], queries: np.ndarray, k: int, batch: int = 64) -> dict[str, dict]:
    """Per catalog: result ids, single-query p50/p95 ms, batched ms per query (batches of `batch`).

    The catalogs take turns query by query, so a load spike from another process hits all of them alike."""
    single: dict[str, list[float]] = {name: [] for name in catalogs}
    batched: dict[str, list[float]] = {name: [] for name in catalogs}
    ids: dict[str, list[list[str]]] = {name: [] for name in catalogs}
    for catalog in catalogs.values():
        catalog.search(queries[:1], k)  # warm-up
    for q in queries:
        for name, catalog in catalogs.items():
            start = time.perf_counter()
            hits = catalog.search(q[None], k)[0]
            single[name].append(ms_since(start))
            ids[name].append([h.product_id for h in hits])
    for first in range(0, len(queries) - batch + 1, batch):
        for name, catalog in catalogs.items():
            start = time.perf_counter()
            catalog.search(queries[first:first + batch], k)
            batched[name].append(ms_since(start) / batch)
    return {name: {"ids": ids[name], "p50": float(np.median(single[name])),
                   "p95": float(np.percentile(single[name], 95)), "batched": float(np.median(batched[name]))}
            for name in catalogs}


def add_search_arguments(parser: argparse.ArgumentParser, sizes: str, dim: int, dim_help: str) -> None:
    """The flags of the catalog search benchmarks: catalog sizes, D, queries, k, FAISS threads, nprobe, efSearch,
    seed."""
    from rtdgan.index.catalog.base import DEFAULT_EF_SEARCH, DEFAULT_NPROBE

    parser.add_argument("--sizes", default=sizes, help="catalog sizes, comma-separated")
    parser.add_argument("--dim", type=int, default=dim, help=dim_help)
    parser.add_argument("--queries", type=int, default=256, help="queries per measurement (a multiple of 64)")
    parser.add_argument("--k", type=int, default=60, help="top-k (recall@k)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS OpenMP threads")
    parser.add_argument("--nprobe", type=int, default=DEFAULT_NPROBE)
    parser.add_argument("--ef-search", type=int, default=DEFAULT_EF_SEARCH)
    parser.add_argument("--seed", type=int, default=0)


def numbered_products(n: int, categories: int = 10) -> list:
    """n products p0, p1, ... in `categories` categories round-robin (c0, c1, ...)."""
    from rtdgan.index.catalog.base import ProductMeta

    return [ProductMeta(f"p{i}", category=f"c{i % categories}") for i in range(n)]


def recall_against(ids: list[list[str]], exact: list[list[str]]) -> float:
    """Mean share of the exact top-k each query's results hold."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ids, exact, strict=True)]))


# ---- `rtd serve` over loopback HTTP ---------------------------------------------------------------------

DELIBERATE_503 = {"overloaded", "deadline_exceeded", "not_ready"}
WORKERS_PER_CLIENT = 8  # concurrent requests per client process
MAX_CLIENTS = 4


def load_photos(folder: Path, limit: int = 32) -> list[bytes]:
    """Up to `limit` photos of `folder` spread over it, street photos (LookBook CLEAN0) preferred."""
    from rtdgan.index.files import is_image_file
    from rtdgan.index.lookbook import is_street_photo

    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    street = [p for p in files if is_street_photo(p.name)] or files
    if not street:
        raise SystemExit(f"no photos in {folder}")
    step = max(1, len(street) // limit)
    return [p.read_bytes() for p in street[::step][:limit]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, log: Path, log_level: str = "warning") -> subprocess.Popen:
    """`rtd serve` on 127.0.0.1:`port` as a subprocess, once /health/ready answers 200. `args` carries artifacts,
    index, max_batch, max_wait_ms, queue_size, request_timeout_ms, providers, threads and optionally backend and
    precision (each the server's RTD_* setting)."""
    import httpx

    env = os.environ | {"RTD_MAX_BATCH": str(args.max_batch), "RTD_MAX_WAIT_MS": str(args.max_wait_ms),
                        "RTD_QUEUE_SIZE": str(args.queue_size)}
    if args.request_timeout_ms:
        env["RTD_REQUEST_TIMEOUT_MS"] = str(args.request_timeout_ms)
    if args.providers:
        env["RTD_PROVIDERS"] = args.providers
    if args.threads:
        env["RTD_THREADS"] = str(args.threads)
    for name in ("backend", "precision"):
        if getattr(args, name, None):
            env[f"RTD_{name.upper()}"] = getattr(args, name)
    server = subprocess.Popen([sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(args.artifacts),
                               "--index", str(args.index), "--host", "127.0.0.1", "--port", str(port),
                               "--log-level", log_level], env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                              cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not become ready in 300 s")


def serve(artifacts: Path, index: Path, log: Path, **settings: object) -> tuple[subprocess.Popen, str]:
    """`start_server` on a free port with the service's defaults (batches of up to 16, no batching wait, a queue of
    64, onnxruntime's best providers) but for `settings`; the server and its base URL."""
    import argparse

    args = argparse.Namespace(**({"artifacts": artifacts, "index": index, "max_batch": 16, "max_wait_ms": 0.0,
                                  "queue_size": 64, "request_timeout_ms": None, "providers": "", "threads": None}
                                 | settings))
    port = free_port()
    return start_server(args, port, log), f"http://127.0.0.1:{port}"


def stop_servers(servers: list[subprocess.Popen]) -> None:
    for server in servers:
        server.terminate()
        server.wait(timeout=30)


async def one_request(client: httpx.AsyncClient, route: str, photo: bytes) -> tuple[int, str, float]:
    """POST the photo to `route` (/search with k = 10): (status, error code, ms)."""
    import httpx

    start = time.perf_counter()
    try:
        response = await client.post(route, files={"image": ("photo.jpg", photo, "image/jpeg")},
                                     data={"k": "10"} if route == "/search" else None)
    except httpx.HTTPError as e:
        return 0, type(e).__name__, ms_since(start)
    code = ""
    if response.status_code >= 400:
        try:
            code = response.json().get("error", "")
        except ValueError:
            code = "not_json"
    return response.status_code, code, ms_since(start)


async def alternate(bases: dict[str, str], photos: list[bytes], repeats: int) -> dict[str, list[float]]:
    """/search on each server in turn, one request at a time (the order reversed every round), `repeats` timed
    rounds after 5 that warm the connections: ms per server. Any answer but 200 stops the run."""
    import httpx

    times: dict[str, list[float]] = {name: [] for name in bases}
    clients = {name: httpx.AsyncClient(base_url=base, timeout=30) for name, base in bases.items()}
    try:
        for i in range(repeats + 5):
            order = list(bases) if i % 2 == 0 else list(reversed(bases))
            for name in order:
                status, code, ms = await one_request(clients[name], "/search", photos[i % len(photos)])
                if status != 200:
                    raise SystemExit(f"{name}: /search answered {status} {code}")
                if i >= 5:
                    times[name].append(ms)
    finally:
        for client in clients.values():
            await client.aclose()
    return times


async def _workers(base: str, route: str, photos: list[bytes], concurrency: int, requests: int | None,
                   seconds: float | None, backoff_s: float = 0.0) -> tuple[list[tuple[int, str, float]], float]:
    """`concurrency` workers on one client posting back to back, for a number of requests or of seconds; after
    a 503 a worker waits `backoff_s` first (0: it retries at once, the harshest client)."""
    import httpx

    results: list[tuple[int, str, float]] = []
    issued = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds if seconds is not None else None

        async def worker() -> None:
            nonlocal issued
            while (requests is None or issued < requests) and (deadline is None or time.perf_counter() < deadline):
                issued += 1
                results.append(await one_request(client, route, photos[issued % len(photos)]))
                if backoff_s and results[-1][0] == 503:
                    await asyncio.sleep(backoff_s)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - start


def _client_shard(base: str, route: str, photos: list[bytes], concurrency: int, requests: int | None,
                  seconds: float | None, start_at: float, backoff_s: float = 0.0
                  ) -> tuple[list[tuple[int, str, float]], float]:
    """One client process; all shards start at the same wall-clock time."""
    time.sleep(max(0.0, start_at - time.time()))
    return asyncio.run(_workers(base, route, photos, concurrency, requests, seconds, backoff_s))


def drive(base: str, route: str, photos: list[bytes], concurrency: int, *, requests: int | None = None,
          seconds: float | None = None, backoff_s: float = 0.0) -> dict:
    """Load from `concurrency` workers, spread over client processes of at most WORKERS_PER_CLIENT each.

    One asyncio httpx client with 32 connections starves some of them for seconds (client-side tails the
    server never sees); a few processes with 8 each measure the server instead of the client.
    """
    shards = max(1, min(MAX_CLIENTS, math.ceil(concurrency / WORKERS_PER_CLIENT)))
    sizes = [concurrency // shards + (i < concurrency % shards) for i in range(shards)]
    if shards == 1:
        results, elapsed = asyncio.run(_workers(base, route, photos, concurrency, requests, seconds, backoff_s))
    else:
        start_at = time.time() + 5.0  # time for the spawned clients to import
        with ProcessPoolExecutor(shards, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_client_shard, base, route, photos, size,
                                   None if requests is None else math.ceil(requests * size / concurrency), seconds,
                                   start_at, backoff_s) for size in sizes]
            parts = [f.result() for f in futures]
        results = [r for part, _ in parts for r in part]
        elapsed = max(e for _, e in parts)
    ok = [ms for status, _, ms in results if status == 200]
    statuses: dict[str, int] = {}
    for status, code, _ in results:
        key = str(status) + (f" {code}" if code else "")
        statuses[key] = statuses.get(key, 0) + 1
    unexpected_5xx = sum(1 for status, code, _ in results
                         if status == 0 or (status >= 500 and not (status == 503 and code in DELIBERATE_503)))
    return {"requests": len(results), "seconds": elapsed, "ok_per_s": len(ok) / elapsed, "client_processes": shards,
            "p50_ms": percentile(ok, 50), "p99_ms": percentile(ok, 99), "max_ms": max(ok, default=float("nan")),
            "statuses": statuses, "ok": len(ok), "count_503": sum(1 for status, _, _ in results if status == 503),
            "other": sum(1 for status, _, _ in results if status not in (200, 503)),
            "p99_503_ms": percentile([ms for status, _, ms in results if status == 503], 99),
            "unexpected_5xx_or_errors": unexpected_5xx,
            "deliberate_503": sum(1 for status, code, _ in results if status == 503 and code in DELIBERATE_503)}


def server_latency(log: Path, route: str = "/search") -> dict[str, dict[str, float]]:
    """The server's own view of `route` (middleware in to last byte out, from its access log lines
    "POST /search -> 200 in 12.3 ms"), per status: count, p50 and p99 in ms."""
    times: dict[str, list[float]] = {}
    for status, ms in re.findall(rf"POST {re.escape(route)} -> (\d+) in ([0-9.]+) ms", log.read_text()):
        times.setdefault(status, []).append(float(ms))
    return {status: {"count": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
            for status, v in sorted(times.items())}


# ---- the paper-size generator ---------------------------------------------------------------------------

PAPER_STAGES = 3  # rtdGAN's N in the paper's Table 1


def export_random_generator(size: int, width: int, path: Path, stages: int = PAPER_STAGES):  # noqa: ANN201 - torch
    """rtdGAN (N = `stages`) at S = `size` and `width`, random weights (seed 0: speed does not depend on them),
    exported to `path` by `rtd export`'s code (parity-checked against PyTorch); returns the network."""
    import warnings

    import torch

    from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator
    from rtdgan.training.export import export_generator

    torch.manual_seed(0)
    net = ProgressiveGenerator(GeneratorConfig(size, stages, width)).at_stage().eval()
    sample = np.random.default_rng(0).uniform(-1, 1, (4, 3, size, size)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_generator(net, path, size, sample)
    return net


def paper_size_world(src: Path, catalog: Path, out: Path, size: int, width: int) -> tuple[Path, Path]:
    """Artifacts + index for an untrained rtdGAN at `size` px and `width` (Sec. 4.1: 256 px, 64) with src's
    embedder backbone re-exported for `size` px inputs, and that catalog indexed with it. The weights do not
    change the speed. Needs torch; returns (artifacts, index)."""
    from rtdgan.index.build import build_index
    from rtdgan.index.files import sha256_file
    from rtdgan.training.export_embedder import export_embedder
    from rtdgan.training.weights import load_embedder

    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True)
    model = json.loads((src / "model.json").read_text())
    model.pop("current", None)  # src may be `rtd export`'s versioned folder: its model.json is a pointer
    sample = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    export_random_generator(size, width, artifacts / "generator.onnx")
    model["embedder"] = export_embedder(*load_embedder(model["embedder"]["backbone"]), artifacts / "embedder.onnx",
                                        size, sample)
    model["generator"] |= {"resolution": size, "native_size": size, "width": width, "training_steps": 0,
                           "onnx_sha256": sha256_file(artifacts / "generator.onnx")}
    model["preprocessing"]["size"] = size
    (artifacts / "model.json").write_text(json.dumps(model, indent=1))
    build_index(artifacts, catalog, out / "index")
    return artifacts, out / "index"


# ---- synthetic worlds and the demo generator's export ---------------------------------------------------

def synthesize_once(cfg: SynthConfig, hint: str = "give it a folder of its own") -> bool:
    """`rtd data synth` into cfg.out unless a complete set of the same products, photos, size, seed and framing is
    there already; True when it was written now. A complete set of another world there is refused (UserError,
    ending with `hint`): a rerun never mixes worlds."""
    from rtdgan.index.errors import UserError
    from rtdgan.training.synth import synthesize

    marker = Path(cfg.out) / "synth.json"
    have = json.loads(marker.read_text()) if marker.is_file() else {}
    want = {"products": cfg.products, "photos_per_product": cfg.photos_per_product, "size": cfg.size,
            "seed": cfg.seed, "framing": cfg.framing}
    if have.get("complete"):
        if diff := {k: have.get(k) for k, v in want.items() if have.get(k) != v}:
            raise UserError(f"{cfg.out} holds another world ({diff}, this run wants {want}): {hint}")
        return False
    synthesize(cfg)
    return True


def synth_world(out: Path, products: int, seed: int, framing: str = "lookbook", size: int = 64, photos: int = 4,
                workers: int = 1) -> bool:
    """A synthetic set of `products` x `photos` at `size` px (`synthesize_once`); True when it was written now."""
    from rtdgan.training.synth import SynthConfig

    return synthesize_once(SynthConfig(out=out, products=products, photos_per_product=photos, size=size, seed=seed,
                                       workers=workers, framing=framing))


def export_demo_generator(root: Path, parity_data: Path, input_size: int | None = None,
                          name: str = "artifacts") -> Path:
    """ROOT/`name`: the committed demo generator as a run folder (as training/demo_generator.py does), exported with
    EfficientNet-Lite0 at embed level 0 (the embedder resizing to `input_size`, None: its 224); kept when there."""
    from rtdgan.index.files import sha256_file
    from rtdgan.training.demo_generator import weights_run
    from rtdgan.training.export import ExportConfig, export_run

    artifacts = root / name
    if (artifacts / "model.json").is_file():
        return artifacts
    card = json.loads(PRETRAINED.with_suffix(".json").read_text())
    if card["sha256"] != sha256_file(PRETRAINED):
        raise SystemExit(f"{PRETRAINED} does not match its card")
    run = weights_run(PRETRAINED, root / "pretrained-run")
    export_run(ExportConfig(run=run, out=artifacts, embedder="efficientnet_lite0", embed_level=0,
                            embed_input_size=input_size, parity_data=parity_data))
    return artifacts


PHOTO_RE = re.compile(r"^PID(\d{6})_CLEAN0_IID(\d{6})\.jpg$")


def person_square(seed: int, index: int, k: int, size: int, framing: str = "street") -> tuple[int, int, int, int]:
    """The square crop (left, top, right, bottom) of photo k of product `index` that frames its person as
    LookBook does (rtdgan.index.runtime.crop `square_box`): the synthesizer's own person box
    (rtdgan.training.synth `photo_person_box`, replayed from the photo's random stream)."""
    from rtdgan.index.runtime.crop import square_box
    from rtdgan.training.synth import photo_person_box

    return tuple(round(v) for v in square_box(photo_person_box(seed, index, k, size, framing), size, size))


def crop_shop(source: Path, products_from: Path, out: Path, seed: int, out_size: int = 64) -> bool:
    """Every photo of `source` cropped to its person (the oracle box, `person_square`) and resized to out_size;
    the product images and products.csv of `products_from` (the 64 px shop: the same products). True when
    written now."""
    from PIL import Image

    marker = out / "crop.json"
    if marker.is_file():
        return False
    out.mkdir(parents=True, exist_ok=True)
    info = json.loads((source / "synth.json").read_text())
    if info["seed"] != seed:
        raise SystemExit(f"{source}: expected a set of seed {seed}")
    per = int(info["photos_per_product"])
    count = 0
    for path in sorted(source.iterdir()):
        m = PHOTO_RE.match(path.name)
        if not m:
            continue
        index, iid = int(m.group(1)), int(m.group(2))
        k = iid - index * (per + 1) - 1
        with Image.open(path) as img:
            box = person_square(seed, index, k, img.size[0], info["framing"])
            crop = img.convert("RGB").crop(box).resize((out_size, out_size), Image.Resampling.LANCZOS)
        crop.save(out / path.name, "JPEG", quality=92, subsampling="4:2:0")
        count += 1
    for path in products_from.iterdir():
        if "_CLEAN1_" in path.name or path.name == "products.csv":
            shutil.copy2(path, out / path.name)
    marker.write_text(json.dumps({"source": str(source), "seed": seed, "photos": count, "size": out_size}) + "\n")
    return True
