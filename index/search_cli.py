"""`rtd index search`: one photo -> top-K catalog products as JSON, on the service's path. No torch.

The path is the service's /search: the one pipeline (index/pipeline.py) — the shared preprocessing at the
artifacts' size S, generator.onnx (street photo -> product image, Sec. 5 "Recall@K"), embedder.onnx, then
cosine top-K in the catalog; with a retrieval head in the artifacts (index/head.py) its query (fused: the
generated image and the photo) through the head. `--no-generate` embeds the image as it is: the no-generation
baseline for a street photo, or a catalog image looking for itself (without a head, or with a photo head).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from rtdgan.index.errors import UserError
from rtdgan.index.pipeline import Pipeline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `rtd index search`."""
    parser.add_argument("--artifacts", type=Path, required=True, help="folder with generator.onnx, embedder.onnx, model.json")
    parser.add_argument("--index", required=True,
                        help="the catalog from `rtd index build`: an index folder, or a Milvus location "
                             "(milvus:///abs/path/catalog.db[/collection], milvus://host:19530/collection)")
    parser.add_argument("--image", type=Path, required=True, help="street photo (any format PIL reads)")
    parser.add_argument("-k", type=int, default=10, help="how many products")
    parser.add_argument("--category", default=None, help="only products of this category")
    parser.add_argument("--no-generate", action="store_true",
                        help="embed the image itself (no generator): the photo baseline, or a catalog image")
    parser.add_argument("--nprobe", type=int, default=None, help="IVF lists scanned per query (default: the build's)")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW search breadth (default: the build's)")


def run(args: argparse.Namespace) -> int:
    """Print the config on stderr and the top-K as JSON on stdout; returns the exit code."""
    config = {"artifacts": str(args.artifacts), "index": str(args.index), "image": str(args.image), "k": args.k,
              "category": args.category, "generate": not args.no_generate, "nprobe": args.nprobe,
              "ef_search": args.ef_search}
    print("rtd index search: config " + json.dumps(config), file=sys.stderr)
    if args.k < 1:
        raise UserError(f"-k must be >= 1, got {args.k}")
    pipeline = Pipeline.open(args.artifacts, args.index, generator=not args.no_generate)
    pipeline.catalog.set_search_params(args.nprobe, args.ef_search)  # type: ignore[union-attr]
    hits = pipeline.search_image(args.image, args.k, args.category, "photo" if args.no_generate else None)
    results = [{"rank": rank, **asdict(hit)} for rank, hit in enumerate(hits, start=1)]
    print(json.dumps({"image": str(args.image), "generated": not args.no_generate, "results": results}, indent=1))
    return 0
