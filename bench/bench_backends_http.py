"""Each inference backend through HTTP: `rtd serve` on onnxruntime fp32 and on the others, side by side.

    python bench/bench_backends_http.py --artifacts demo/artifacts --catalog demo/data --photos demo/samples

bench/bench_backends.py measures the graphs alone; this measures what a shop frontend sees. One `rtd serve` per
backend (RTD_BACKEND / RTD_PRECISION) on a temporary copy of the artifacts, all on one index built on
onnxruntime fp32 (the usual case after switching a service's backend; the parity gate measured that case too).
A backend without a passing parity record on the artifacts is checked first on --photos (`rtd check-backend`'s
code, into the copy). Then, on the same machine in one run: /search at concurrency 1 with requests alternating
between the servers (p50, p90: the ratio to onnxruntime fp32 is the figure), and throughput at --concurrency for
--seconds per server, one server at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import (  # noqa: E402
    alternate,
    drive,
    load_photos,
    machine,
    paper_size_world,
    percentile,
    serve,
    stop_servers,
    write_json,
)
from rtdgan.index.build import build_index  # noqa: E402
from rtdgan.index.errors import UserError  # noqa: E402
from rtdgan.index.parity import CheckConfig, require_parity, run_check  # noqa: E402
from rtdgan.index.runtime.backends import make_backend  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", type=Path, required=True)
    p.add_argument("--catalog", type=Path, required=True, help="the catalog to index (e.g. demo/data)")
    p.add_argument("--photos", type=Path, required=True, help="street photos to send (and to check parity on)")
    p.add_argument("--backends", default="onnxruntime:fp32,openvino:fp32",
                   help="backend:precision pairs, the first the reference of the ratios (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=100, help="concurrency-1 requests per server")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="throughput phase per server")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per graph (RTD_THREADS)")
    p.add_argument("--request-timeout-ms", type=int, default=30_000, help="RTD_REQUEST_TIMEOUT_MS of the servers: "
                   "long enough that the paper-size model's queue is measured, not shed (default: %(default)s)")
    p.add_argument("--paper-size", type=int, default=None, help="replace the generator by an untrained rtdGAN at this "
                   "size (the paper's: 256; bench/common.py paper_size_world, needs torch) with the embedder re-exported; no head "
                   "or crop")
    p.add_argument("--generator-width", type=int, default=64, help="its width (the paper's: 64)")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = p.parse_args(argv)
    pairs = [tuple(item.split(":")) for item in args.backends.split(",")]
    photos = load_photos(args.photos)
    servers, bases = [], {}
    with tempfile.TemporaryDirectory(prefix="rtd-backends-http-") as tmp:
        if args.paper_size:
            from rtdgan.index.runtime.artifacts import read_artifacts

            artifacts, _ = paper_size_world(read_artifacts(args.artifacts).folder, args.catalog, Path(tmp) / "paper",
                                            args.paper_size, args.generator_width)
        else:
            artifacts = Path(shutil.copytree(args.artifacts, Path(tmp) / "artifacts"))
        index = Path(tmp) / "index"
        build_index(artifacts, args.catalog, index, backend=make_backend("onnxruntime", "fp32"))
        try:
            for name, precision in pairs:
                backend = make_backend(name, precision, threads=args.threads)  # UserError: not runnable here
                try:
                    require_parity(artifacts, backend)
                except UserError:
                    run_check(CheckConfig(artifacts=artifacts, backend=name, precision=precision, photos=args.photos,
                                          threads=args.threads))
                server, bases[f"{name} {precision}"] = serve(
                    artifacts, index, Path(tmp) / f"server-{name}-{precision}.log", max_wait_ms=2.0,
                    request_timeout_ms=args.request_timeout_ms, threads=args.threads, backend=name, precision=precision)
                servers.append(server)
            times = asyncio.run(alternate(bases, photos, args.repeats))
            load = {label: drive(base, "/search", photos, args.concurrency, seconds=args.seconds)
                    for label, base in bases.items()}
        finally:
            stop_servers(servers)
    reference = next(iter(bases))
    print(machine())
    rows = {label: {"p50_ms": round(percentile(times[label], 50), 2), "p90_ms": round(percentile(times[label], 90), 2),
                    "ok_per_s": round(load[label]["ok_per_s"], 2), "p99_ms_loaded": round(load[label]["p99_ms"], 1),
                    "statuses": load[label]["statuses"]} for label in bases}
    print(f"| backend | /search p50 (c=1) | p90 | vs {reference} | /search ok/s (c={args.concurrency}) | "
          f"vs {reference} | p99 at c={args.concurrency} |\n|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['p50_ms']} ms | {r['p90_ms']} ms | {r['p50_ms'] / rows[reference]['p50_ms']:.2f}x | "
              f"{r['ok_per_s']} | {r['ok_per_s'] / rows[reference]['ok_per_s']:.2f}x | {r['p99_ms_loaded']} ms |")
    write_json(args.out, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
