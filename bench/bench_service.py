"""Service benchmark: what HTTP, multipart, preprocessing and micro-batching cost over raw onnxruntime.

    python bench/bench_service.py --tiny                                  # quick: the test suite's tiny models
    python bench/bench_service.py --tiny --load-only --concurrency 100 --duration 30   # the overload check
    python bench/bench_service.py --artifacts artifacts --index index --photos data/test_photos \
        --duration 60 --concurrency 32

It starts `rtd serve` (service/serve_cli.py) as a subprocess on 127.0.0.1 and drives it with an asyncio
httpx client from this process; loopback only, nothing leaves the machine. Three measurements:

1. latency at concurrency 1: p50 of POST /generate and POST /search against the same work done by raw
   onnxruntime in this process (generator; generator + embedder + catalog search), each on one image;
   the ratio is the service's overhead factor.
2. throughput at concurrency 8 and 32: /search requests per second against raw onnxruntime running the
   generator and embedder on batches of min(concurrency, max_batch) images; the ratio is the share of the
   raw batched throughput the service delivers.
3. a bounded load test (--duration seconds at --concurrency): status counts, 5xx other than the deliberate
   503s (queue full, past the request deadline, not ready), p50/p99 latency of the answered requests.
   `--load-only` runs just this one (no raw baselines): the overload check of the hardening issue, where
   every request is answered 200 within its deadline or 503 + Retry-After, never left to queue.

Concurrency above 8 is spread over up to 4 client processes (8 workers each): a single asyncio client
with 32 connections starves some of them for seconds, a tail the server never sees. The clients share
the machine's CPUs with the server: on a small machine the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Spinning OpenMP workers (FAISS) fight the server, the client and other processes for the cores; sleeping
# ones give repeatable numbers. Set before FAISS loads; the server subprocess inherits it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from rtdgan.index.catalog.file import Catalog  # noqa: E402
from rtdgan.index.files import is_image_file  # noqa: E402
from rtdgan.index.images import preprocess, to_png_bytes  # noqa: E402
from rtdgan.index.lookbook import is_street_photo  # noqa: E402
from rtdgan.index.runtime.onnx import OnnxEmbedder, OnnxGenerator  # noqa: E402
from rtdgan.service.engine import read_artifacts  # noqa: E402

DELIBERATE_503 = {"overloaded", "deadline_exceeded", "not_ready"}
WORKERS_PER_CLIENT = 8  # concurrent requests per client process
MAX_CLIENTS = 4


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def load_photos(folder: Path, limit: int = 32) -> list[bytes]:
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    street = [p for p in files if is_street_photo(p.name)] or files  # LookBook: the photos of people
    if not street:
        raise SystemExit(f"no photos in {folder}")
    step = max(1, len(street) // limit)
    return [p.read_bytes() for p in street[::step][:limit]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, port: int, log: Path, log_level: str = "warning") -> subprocess.Popen:
    env = os.environ | {"RTD_MAX_BATCH": str(args.max_batch), "RTD_MAX_WAIT_MS": str(args.max_wait_ms),
                        "RTD_QUEUE_SIZE": str(args.queue_size)}
    if args.request_timeout_ms:
        env["RTD_REQUEST_TIMEOUT_MS"] = str(args.request_timeout_ms)
    if args.providers:
        env["RTD_PROVIDERS"] = args.providers
    if args.threads:
        env["RTD_THREADS"] = str(args.threads)
    for name in ("backend", "precision"):  # optional: bench_backends_http.py serves each backend in turn
        if getattr(args, name, None):
            env[f"RTD_{name.upper()}"] = getattr(args, name)
    server = subprocess.Popen([sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(args.artifacts),
                               "--index", str(args.index), "--host", "127.0.0.1", "--port", str(port),
                               "--log-level", log_level], env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"),
                              cwd=Path(__file__).resolve().parents[1])
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


def paper_size_world(src: Path, catalog: Path, out: Path, size: int, width: int) -> tuple[Path, Path]:
    """Artifacts + index for an untrained rtdGAN at `size` px and `width` (Sec. 4.1: 256 px, 64) with src's
    embedder backbone re-exported for `size` px inputs, and that catalog indexed with it. The weights do not
    change the speed. Needs torch; returns (artifacts, index)."""
    from rtdgan.index.build import build_index
    from rtdgan.index.files import sha256_file
    from rtdgan.models.generator import GeneratorConfig, ProgressiveGenerator
    from rtdgan.training.export import export_generator
    from rtdgan.training.export_embedder import export_embedder
    from rtdgan.training.weights import load_embedder

    artifacts = out / "artifacts"
    artifacts.mkdir(parents=True)
    model = json.loads((src / "model.json").read_text())
    model.pop("current", None)  # src may be `rtd export`'s versioned folder: its model.json is a pointer
    sample = np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    net = ProgressiveGenerator(GeneratorConfig(size, 3, width)).at_stage().eval()
    export_generator(net, artifacts / "generator.onnx", size, sample)
    model["embedder"] = export_embedder(*load_embedder(model["embedder"]["backbone"]), artifacts / "embedder.onnx",
                                        size, sample)
    model["generator"] |= {"resolution": size, "native_size": size, "width": width, "training_steps": 0,
                           "onnx_sha256": sha256_file(artifacts / "generator.onnx")}
    model["preprocessing"]["size"] = size
    (artifacts / "model.json").write_text(json.dumps(model, indent=1))
    build_index(artifacts, catalog, out / "index")
    return artifacts, out / "index"


# ---- raw onnxruntime baselines ------------------------------------------------------------------------

def raw_baselines(args: argparse.Namespace, photos: list[bytes], repeats: int) -> dict:
    """Latency of one image and throughput of batches, straight through onnxruntime in this process."""
    info = read_artifacts(args.artifacts)
    providers = args.providers.split(",") if args.providers else None
    generator = OnnxGenerator(info.folder / "generator.onnx", providers, args.threads)
    embedder = OnnxEmbedder(info.folder / "embedder.onnx", providers, args.threads)
    catalog = Catalog.open(args.index)
    arrays = np.stack([preprocess(p, info.size) for p in photos])  # (N, 3, S, S)
    one = arrays[:1]
    for _ in range(3):  # warm-up
        embedder(generator(one))
    gen_ms, search_ms = [], []
    for i in range(repeats):
        x = arrays[i % len(arrays)][None]  # (1, 3, S, S)
        t = time.perf_counter()
        generator(x)
        gen_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        catalog.search(embedder(generator(x)), 10)
        search_ms.append((time.perf_counter() - t) * 1000)
    # The same work as the routes, in-process and without HTTP: decode + resize in, models, PNG / search out.
    gen_pipe_ms, search_pipe_ms = [], []
    for i in range(repeats):
        t = time.perf_counter()
        to_png_bytes(generator(preprocess(photos[i % len(photos)], info.size)[None])[0])
        gen_pipe_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        catalog.search(embedder(generator(preprocess(photos[i % len(photos)], info.size)[None])), 10)
        search_pipe_ms.append((time.perf_counter() - t) * 1000)
    throughput = {}
    for concurrency in args.throughput_concurrency:
        batch = arrays[np.arange(min(concurrency, args.max_batch)) % len(arrays)]  # (B, 3, S, S)
        embedder(generator(batch))
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.throughput_seconds:
            embedder(generator(batch))
            count += len(batch)
        throughput[concurrency] = count / (time.perf_counter() - start)
    return {"generate_p50_ms": percentile(gen_ms, 50), "search_p50_ms": percentile(search_ms, 50),
            "generate_pipeline_p50_ms": percentile(gen_pipe_ms, 50),
            "search_pipeline_p50_ms": percentile(search_pipe_ms, 50), "batched_images_per_s": throughput,
            "image_size": info.size, "providers": generator.providers}


# ---- the service over HTTP -----------------------------------------------------------------------------

async def one_request(client: httpx.AsyncClient, route: str, photo: bytes) -> tuple[int, str, float]:
    start = time.perf_counter()
    try:
        response = await client.post(route, files={"image": ("photo.jpg", photo, "image/jpeg")},
                                     data={"k": "10"} if route == "/search" else None)
    except httpx.HTTPError as e:
        return 0, type(e).__name__, (time.perf_counter() - start) * 1000
    code = ""
    if response.status_code >= 400:
        try:
            code = response.json().get("error", "")
        except ValueError:
            code = "not_json"
    return response.status_code, code, (time.perf_counter() - start) * 1000


async def _workers(base: str, route: str, photos: list[bytes], concurrency: int, requests: int | None,
                   seconds: float | None, backoff_s: float = 0.0) -> tuple[list[tuple[int, str, float]], float]:
    """`concurrency` workers on one client posting back to back, for a number of requests or of seconds; after
    a 503 a worker waits `backoff_s` first (0: it retries at once, the harshest client)."""
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


def http_floor(base: str, repeats: int) -> dict:
    """p50 of GET /health/live at concurrency 1 with the same client: the round trip of the client, loopback
    and uvicorn that any endpoint pays, before the service does any work."""
    async def run() -> list[float]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            times = []
            for i in range(repeats + 5):
                start = time.perf_counter()
                (await client.get("/health/live")).raise_for_status()
                if i >= 5:
                    times.append((time.perf_counter() - start) * 1000)
            return times

    return {"p50_ms": percentile(asyncio.run(run()), 50)}


def bench_http(base: str, photos: list[bytes], args: argparse.Namespace) -> dict:
    out: dict = {"floor_c1_health_live": http_floor(base, args.repeats)}
    for route in ("/generate", "/search"):
        drive(base, route, photos, 1, requests=5)  # warm the connection and the code paths
        out[f"latency_c1{route.replace('/', '_')}"] = drive(base, route, photos, 1, requests=args.repeats)
    for concurrency in args.throughput_concurrency:
        out[f"throughput_c{concurrency}_search"] = drive(base, "/search", photos, concurrency,
                                                         seconds=args.throughput_seconds)
    out["load_test_search"] = drive(base, "/search", photos, args.concurrency, seconds=args.duration)
    return out


def server_latency(log: Path, route: str = "/search") -> dict[str, dict[str, float]]:
    """The server's own view of `route` (middleware in to last byte out, from its access log lines
    "POST /search -> 200 in 12.3 ms"), per status: count, p50 and p99 in ms."""
    import re

    times: dict[str, list[float]] = {}
    for status, ms in re.findall(rf"POST {re.escape(route)} -> (\d+) in ([0-9.]+) ms", log.read_text()):
        times.setdefault(status, []).append(float(ms))
    return {status: {"count": len(v), "p50_ms": percentile(v, 50), "p99_ms": percentile(v, 99)}
            for status, v in sorted(times.items())}


def describe_load(load: dict, args: argparse.Namespace) -> str:
    return (f"load {args.duration:.0f} s at c={args.concurrency}: {load['requests']} requests; answered 200: "
            f"{load['ok']} ({load['ok_per_s']:.0f}/s), p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, max "
            f"{load['max_ms']:.1f} ms; 503: {load['count_503']} (p99 {load['p99_503_ms']:.1f} ms); other statuses: "
            f"{load['other']}; by status {load['statuses']}; unexpected 5xx {load['unexpected_5xx_or_errors']}"
            + (f"; server side {load['server_side']}" if "server_side" in load else ""))


def load_only(args: argparse.Namespace, photos: list[bytes], log: Path) -> int:
    """Just the bounded load test against a fresh server: the overload check (200 in time, or 503, nothing else)."""
    port = free_port()
    server = start_server(args, port, log, log_level="info")  # info: one access line per request, timed
    base = f"http://127.0.0.1:{port}"
    try:
        drive(base, "/search", photos, 1, requests=5)  # warm the code paths
        load = drive(base, "/search", photos, args.concurrency, seconds=args.duration, backoff_s=args.backoff_503)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    load["server_side"] = server_latency(log)
    print(describe_load(load, args), file=sys.stderr)
    summary = {"load_test_search": load, "settings": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count()}
    text = json.dumps(summary, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 1 if load["unexpected_5xx_or_errors"] or load["other"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="use the test suite's tiny artifacts and index")
    parser.add_argument("--artifacts", type=Path)
    parser.add_argument("--index", type=Path)
    parser.add_argument("--photos", type=Path, help="folder of street photos to send (LookBook CLEAN0 preferred)")
    parser.add_argument("--providers", default="", help="comma-separated onnxruntime providers; default: best")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads per session")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=0.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50, help="requests for the concurrency-1 latencies")
    parser.add_argument("--throughput-concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[8, 32])
    parser.add_argument("--throughput-seconds", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of the load test")
    parser.add_argument("--concurrency", type=int, default=32, help="workers in the load test")
    parser.add_argument("--generator-size", type=int, help="swap in an untrained rtdGAN generator of this size "
                        "(e.g. 256, the paper's) to measure the overheads at a realistic model cost; needs torch")
    parser.add_argument("--generator-width", type=int, default=64, help="its width (the paper's: 64)")
    parser.add_argument("--catalog", type=Path, help="with --generator-size: the catalog to index (e.g. demo/data)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    parser.add_argument("--load-only", action="store_true", help="run only the bounded load test (--concurrency "
                        "workers for --duration s, e.g. 100 for 30 s: the overload check), no raw baselines")
    parser.add_argument("--request-timeout-ms", type=float, help="the server's RTD_REQUEST_TIMEOUT_MS (default: "
                        "the environment's, else the service default)")
    parser.add_argument("--backoff-503", type=float, default=0.0, help="with --load-only: seconds a client waits "
                        "after a 503 before its next request, as one honouring Retry-After would (default 0: at once)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_service_") as tmp:
        if args.tiny:
            from tests.service.conftest import make_world  # builds ONNX graphs with `onnx.helper`: no torch

            world = make_world(Path(tmp) / "world", products=50)
            args.artifacts, args.index, args.photos = world.artifacts, world.index, world.samples
        if not (args.artifacts and args.index and args.photos):
            parser.error("give --tiny, or --artifacts, --index and --photos")
        if args.generator_size:
            if not args.catalog:
                parser.error("--generator-size needs --catalog (the images to index with the re-exported embedder)")
            args.artifacts, args.index = paper_size_world(args.artifacts, args.catalog, Path(tmp) / "paper_size",
                                                          args.generator_size, args.generator_width)
        photos = load_photos(args.photos)
        if args.load_only:
            return load_only(args, photos, Path(tmp) / "server.log")
        raw = raw_baselines(args, photos, args.repeats)
        port = free_port()
        server = start_server(args, port, Path(tmp) / "server.log")
        try:
            http = bench_http(f"http://127.0.0.1:{port}", photos, args)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)

    summary = {
        "raw": raw, "http": http,
        "overhead_ratio_generate_c1": http["latency_c1_generate"]["p50_ms"] / raw["generate_p50_ms"],
        "overhead_ratio_search_c1": http["latency_c1_search"]["p50_ms"] / raw["search_p50_ms"],
        # Against the same work in-process (with decode, resize, PNG): what HTTP and batching alone add.
        "overhead_ratio_generate_c1_vs_pipeline": http["latency_c1_generate"]["p50_ms"] / raw["generate_pipeline_p50_ms"],
        "overhead_ratio_search_c1_vs_pipeline": http["latency_c1_search"]["p50_ms"] / raw["search_pipeline_p50_ms"],
        # Net of the client's own round trip (GET /health/live): what the service adds on top of the model.
        "overhead_ratio_generate_c1_net_of_floor": (http["latency_c1_generate"]["p50_ms"]
                                                    - http["floor_c1_health_live"]["p50_ms"]) / raw["generate_p50_ms"],
        "overhead_ratio_search_c1_net_of_floor": (http["latency_c1_search"]["p50_ms"]
                                                  - http["floor_c1_health_live"]["p50_ms"]) / raw["search_p50_ms"],
        "throughput_ratio": {c: http[f"throughput_c{c}_search"]["ok_per_s"] / raw["batched_images_per_s"][c]
                             for c in args.throughput_concurrency},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
    }
    print(f"c=1 /generate p50 {http['latency_c1_generate']['p50_ms']:.2f} ms vs raw {raw['generate_p50_ms']:.3f} ms "
          f"(x{summary['overhead_ratio_generate_c1']:.1f}); /search p50 {http['latency_c1_search']['p50_ms']:.2f} ms "
          f"vs raw {raw['search_p50_ms']:.3f} ms (x{summary['overhead_ratio_search_c1']:.1f})", file=sys.stderr)
    print(f"c=1 vs the same work in-process (decode, resize, models, PNG/search): /generate "
          f"x{summary['overhead_ratio_generate_c1_vs_pipeline']:.1f} ({raw['generate_pipeline_p50_ms']:.2f} ms), "
          f"/search x{summary['overhead_ratio_search_c1_vs_pipeline']:.1f} ({raw['search_pipeline_p50_ms']:.2f} ms)",
          file=sys.stderr)
    print(f"c=1 HTTP floor (GET /health/live, same client) {http['floor_c1_health_live']['p50_ms']:.2f} ms; net of it: "
          f"/generate x{summary['overhead_ratio_generate_c1_net_of_floor']:.2f}, "
          f"/search x{summary['overhead_ratio_search_c1_net_of_floor']:.2f} over raw onnxruntime", file=sys.stderr)
    for c in args.throughput_concurrency:
        print(f"c={c} /search {http[f'throughput_c{c}_search']['ok_per_s']:.0f} req/s vs raw batched "
              f"{raw['batched_images_per_s'][c]:.0f} img/s ({summary['throughput_ratio'][c]:.1%})", file=sys.stderr)
    load = http["load_test_search"]
    print(describe_load(load, args), file=sys.stderr)
    text = json.dumps(summary, indent=1, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 1 if load["unexpected_5xx_or_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
