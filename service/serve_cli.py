"""`rtd serve`: flags -> Settings (on top of the RTD_* environment) -> check the folders -> uvicorn.

One process serves one GPU (docs/architecture.md, "Scale"): run more replicas behind a load balancer, not
workers here. No torch is imported on this path. The flags' defaults are Settings' field defaults, so each
is written once (service/settings.py); a flag not given leaves the RTD_* environment variable in charge.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rtdgan.index.configs import print_config
from rtdgan.index.errors import UserError
from rtdgan.index.runtime.backends import PRECISION_HELP

if TYPE_CHECKING:
    from rtdgan.service.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
HOST, PORT, LOG_LEVEL = "127.0.0.1", 8000, "info"  # where uvicorn listens; not service settings
LOG_LEVELS = ("debug", "info", "warning", "error")
# Flags that override a Settings field: (flag, field, help). Their defaults are read from Settings.
SETTING_FLAGS = (
    ("--artifacts", "artifacts", "artifact folder (generator.onnx, embedder.onnx, model.json)"),
    ("--index", "index", "index folder (index.json, catalog-*.faiss/.sqlite) or Milvus location (milvus://...)"),
    ("--demo-samples", "demo_samples", "folder of street photos the demo page offers"),
)


def _setting_default(field: str) -> str:
    """'$RTD_FIELD, else <Settings' default>' for a flag's help text."""
    from rtdgan.service.settings import Settings

    default = Settings.model_fields[field].get_default(call_default_factory=True)
    return f"default: $RTD_{field.upper()}, else {'none' if default is None else default}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `rtd serve` flags; anything not given comes from RTD_* environment variables or Settings' defaults."""
    for flag, field, text in SETTING_FLAGS:
        parser.add_argument(flag, type=Path, dest=field, default=None,
                            help=f"{text} ({_setting_default(field)})".replace("%", "%%"))
    parser.add_argument("--backend", default=None, help=f"inference backend: onnxruntime or openvino "
                        f"(index/backends.py; {_setting_default('backend')})")
    parser.add_argument("--precision", default=None, help=f"{PRECISION_HELP} ({_setting_default('precision')})")
    parser.add_argument("--allow-unchecked-backend", dest="backend_unchecked", action="store_const", const=True,
                        default=None, help="serve a backend without a passing `rtd check-backend` record "
                        "(default: $RTD_BACKEND_UNCHECKED, else no)")
    parser.add_argument("--host", default=HOST, help="address to listen on, 0.0.0.0 in a container (default: %(default)s)")
    parser.add_argument("--port", type=int, default=PORT, help="port to listen on (default: %(default)s)")
    parser.add_argument("--log-level", default=LOG_LEVEL, choices=LOG_LEVELS, help="default: %(default)s")


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    from pydantic import ValidationError

    from rtdgan.service.settings import Settings

    fields = [field for _, field, _ in SETTING_FLAGS] + ["backend", "precision", "backend_unchecked"]
    overrides = {field: getattr(args, field) for field in fields if getattr(args, field, None) is not None}
    try:
        return Settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"bad setting {where} (env RTD_{where.upper()}): {first['msg']}") from e


class JsonFormatter(logging.Formatter):
    """RTD_LOG_FORMAT=json: one JSON object per line (time, level, logger, message, request_id[, exception])."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage(),
               "request_id": getattr(record, "request_id", "-")}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


def configure_logging(level: str, log_format: str | None = None) -> None:
    """One format for every log line, with the request id (or "-") in it: text (LOG_FORMAT) or JSON lines.
    `log_format` is Settings.log_format; None reads RTD_LOG_FORMAT (what Settings would read), else text."""
    from rtdgan.service.middleware import install_request_id_logging

    install_request_id_logging()
    log_format = log_format or os.environ.get("RTD_LOG_FORMAT", "text").strip().lower() or "text"
    if log_format not in ("text", "json"):
        raise UserError(f"bad setting log_format (env RTD_LOG_FORMAT): {log_format!r} is not text or json")
    handler = logging.StreamHandler()  # stderr, as basicConfig's
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def serve(settings: Settings, host: str = HOST, port: int = PORT, log_level: str = LOG_LEVEL) -> None:
    """Serve the app for these settings with uvicorn until stopped (also used by `rtd demo`)."""
    # FAISS's OpenMP workers spin while idle by default: in a server whose threads share the cores with
    # onnxruntime and PIL that costs throughput and makes latency jumpy. Must be set before FAISS loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import uvicorn

    from rtdgan.service.app import create_app
    from rtdgan.service.middleware import uvicorn_options

    configure_logging(log_level, settings.log_format)
    # Header / body / keep-alive timeouts and the connection limit (service/middleware.py, uvicorn_options).
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False, log_level=log_level,
                **uvicorn_options(settings))


def run(args: argparse.Namespace) -> int:
    """Check the artifact and index folders (one-line error if unusable), then serve until stopped."""
    from rtdgan.service.engine import check_folders, resolve_backend

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0..65535, got {args.port}")
    settings = build_settings(args)
    check_folders(settings.artifacts, settings.index)  # fail here, not as a 503 forever
    backend = resolve_backend(settings)  # an unknown backend, or one the parity gate refuses: one line, exit 2
    print_config("serve", settings.model_dump(mode="json") | {"host": args.host, "port": args.port,
                                                               "resolved": backend.describe()})
    serve(settings, args.host, args.port, args.log_level)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rtdgan.service.serve_cli`: the same as `rtd serve`."""
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
