"""`rtd serve`: flags -> Settings (on top of the RTD_* environment) -> check the folders -> uvicorn.

One process serves one GPU (DESIGN.md, "Scale"): run more replicas behind a load balancer, not workers
here. No torch is imported on this path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from index.errors import UserError

if TYPE_CHECKING:
    from service.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd serve` flags; anything not given comes from RTD_* environment variables or defaults."""
    parser.add_argument("--artifacts", type=Path, help="artifact folder (generator.onnx, embedder.onnx, "
                        "model.json); default $RTD_ARTIFACTS or ./artifacts")
    parser.add_argument("--index", type=Path, help="index folder (index.json, catalog-*.faiss/.sqlite); "
                        "default $RTD_INDEX or ./index")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--demo-samples", type=Path, help="folder of street photos the demo page offers")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    from pydantic import ValidationError

    from service.settings import Settings

    overrides = {name: value for name, value in (("artifacts", args.artifacts), ("index", args.index),
                                                ("demo_samples", args.demo_samples)) if value is not None}
    try:
        return Settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"bad setting {where} (env RTD_{where.upper()}): {first['msg']}") from e


def configure_logging(level: str) -> None:
    """One format for every log line, with the request id (or "-") in it."""
    from service.middleware import install_request_id_logging

    install_request_id_logging()
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve the app for these settings with uvicorn until stopped (also used by `rtd demo`)."""
    # FAISS's OpenMP workers spin while idle by default: in a server whose threads share the cores with
    # onnxruntime and PIL that costs throughput and makes latency jumpy. Must be set before FAISS loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from service.app import create_app

    configure_logging(log_level)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False, log_level=log_level)


def run(args: argparse.Namespace) -> int:
    """Check the artifact and index folders (one-line error if unusable), then serve until stopped."""
    from service.engine import check_folders

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    settings = build_settings(args)
    check_folders(settings.artifacts, settings.index)  # fail here, not as a 503 forever
    config = settings.model_dump(mode="json") | {"host": args.host, "port": args.port}
    print(f"rtd serve: config {json.dumps(config)}", file=sys.stderr, flush=True)
    serve(settings, args.host, args.port, args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m service.serve_cli`: the same as `rtd serve`."""
    parser = argparse.ArgumentParser(prog="rtd serve", description="run the HTTP service")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UserError as e:
        print(f"rtd serve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
