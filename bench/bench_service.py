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
   `--load-only` runs just this one (no raw baselines): the overload check, where every request is answered
   200 within its deadline or 503 + Retry-After, never left to queue.

Concurrency above 8 is spread over up to 4 client processes (8 workers each): a single asyncio client
with 32 connections starves some of them for seconds, a tail the server never sees. The clients share
the machine's CPUs with the server: on a small machine the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import (  # noqa: E402
    drive,
    free_port,
    load_photos,
    machine,
    ms_since,
    paper_size_world,
    passive_openmp,
    percentile,
    server_latency,
    start_server,
    write_json,
)

passive_openmp()  # before FAISS loads; the server subprocess inherits it

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from rtdgan.index.catalog.file import Catalog  # noqa: E402
from rtdgan.index.images import preprocess, to_png_bytes  # noqa: E402
from rtdgan.index.runtime.onnx import OnnxEmbedder, OnnxGenerator  # noqa: E402
from rtdgan.service.engine import read_artifacts  # noqa: E402

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
        gen_ms.append(ms_since(t))
        t = time.perf_counter()
        catalog.search(embedder(generator(x)), 10)
        search_ms.append(ms_since(t))
    # The same work as the routes, in-process and without HTTP: decode + resize in, models, PNG / search out.
    gen_pipe_ms, search_pipe_ms = [], []
    for i in range(repeats):
        t = time.perf_counter()
        to_png_bytes(generator(preprocess(photos[i % len(photos)], info.size)[None])[0])
        gen_pipe_ms.append(ms_since(t))
        t = time.perf_counter()
        catalog.search(embedder(generator(preprocess(photos[i % len(photos)], info.size)[None])), 10)
        search_pipe_ms.append(ms_since(t))
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
                    times.append(ms_since(start))
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
    summary = {"load_test_search": load, "settings": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
               "machine": machine()}
    print(write_json(args.out, summary))
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
        "machine": machine(),
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
    print(write_json(args.out, summary))
    return 1 if load["unexpected_5xx_or_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
