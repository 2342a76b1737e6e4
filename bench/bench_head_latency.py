"""What the retrieval head costs /search (the target: at most +15 % at concurrency 1, demo size).

    python bench/bench_head_latency.py --artifacts demo/artifacts --catalog demo/data --photos demo/samples

Two `rtd serve` processes on the same machine, side by side in one run: one on the artifacts with their head
(index built through the head's catalog side; the query is fused: the generated image and the photo in one
embedder call, then the head; and the person crop first when the artifacts have one), one on a copy of the
artifacts without the head files and, unless --keep-crop, without the crop (the frozen protocol: the generated
image of the whole photo). Requests alternate between them one at a time (concurrency 1), so both see the same
machine load; the p50 ratio is the head's cost. Indexes are built into a temporary folder.

With --against OTHER (an artifacts folder, e.g. the version before a fine-tuned one: demo/artifacts/v-000001, the
head on the frozen embedder), the second server serves OTHER as it is instead of the frozen copy: the ratio is
then ARTIFACTS' /search time over OTHER's (a fine-tuned embedder at its own input size against the frozen one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.common

from bench.common import alternate, load_photos, machine, percentile, serve, stop_servers, write_json  # noqa: E402
from rtdgan.index.build import build_index  # noqa: E402
from rtdgan.index.runtime.artifacts import read_artifacts  # noqa: E402
from rtdgan.index.runtime.crop import CROP_JSON, CROP_ONNX  # noqa: E402
from rtdgan.index.runtime.head import CATALOG_ONNX, HEAD_JSON, QUERY_ONNX, has_head  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifacts", type=Path, required=True, help="artifacts with a head (rtd fit-head)")
    p.add_argument("--catalog", type=Path, required=True, help="the catalog to index (e.g. demo/data)")
    p.add_argument("--photos", type=Path, required=True, help="street photos to send")
    p.add_argument("--repeats", type=int, default=200, help="requests per server")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads per session")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    p.add_argument("--against", type=Path, help="serve this artifacts folder as the baseline instead of a frozen copy")
    p.add_argument("--keep-crop", action="store_true", help="keep the person crop in the frozen copy too (the head's "
                   "cost alone); default: the frozen copy has neither head nor crop")
    args = p.parse_args(argv)
    art = read_artifacts(args.artifacts)
    if not has_head(art):
        raise SystemExit(f"{args.artifacts} has no {HEAD_JSON}: nothing to compare")
    photos = load_photos(args.photos)
    servers, bases = [], {}
    with tempfile.TemporaryDirectory(prefix="rtd-head-bench-") as tmp:
        frozen = Path(tmp) / "artifacts-frozen"
        shutil.copytree(art.folder, frozen)
        for name in (HEAD_JSON, QUERY_ONNX, CATALOG_ONNX) + (() if args.keep_crop else (CROP_JSON, CROP_ONNX)):
            (frozen / name).unlink(missing_ok=True)
        cropped = (art.folder / CROP_JSON).is_file()
        frozen_name = "frozen (generated" + (", crop)" if cropped and args.keep_crop else ")")
        if args.against is not None:
            frozen, frozen_name = read_artifacts(args.against).folder, f"baseline ({args.against.name})"
        embedder = art.model["embedder"]
        served = f"head ({json.loads((art.folder / HEAD_JSON).read_text())['mode']}{', crop' if cropped else ''}" + \
            (f", tuned at {embedder['input_size']} px)" if "tuned" in embedder else ")")
        variants = {frozen_name: (frozen, Path(tmp) / "index-frozen"), served: (art.folder, Path(tmp) / "index-head")}
        try:
            for name, (artifacts, index) in variants.items():
                build_index(artifacts, args.catalog, index)
                server, bases[name] = serve(artifacts, index, Path(tmp) / f"server-{len(servers)}.log",
                                            threads=args.threads)
                servers.append(server)
            times = asyncio.run(alternate(bases, photos, args.repeats))
        finally:
            stop_servers(servers)
    result = {name: {"p50_ms": round(percentile(t, 50), 2), "p90_ms": round(percentile(t, 90), 2), "requests": len(t)}
              for name, t in times.items()}
    names = list(result)
    ratio = result[names[1]]["p50_ms"] / result[names[0]]["p50_ms"]
    result["p50_ratio_head_over_frozen"] = round(ratio, 3)
    for name in names:
        print(f"{name:36s} /search p50 {result[name]['p50_ms']:7.2f} ms  p90 {result[name]['p90_ms']:7.2f} ms")
    print(f"{names[1]} / {names[0]} p50: {ratio:.3f}; {machine()}")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
