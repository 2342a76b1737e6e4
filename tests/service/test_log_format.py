"""RTD_LOG_FORMAT=json (service/serve_cli.py `configure_logging`): one JSON object per log line."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from rtdgan.index.errors import UserError
from rtdgan.service import serve_cli
from rtdgan.service.middleware import request_id_var
from tests.service.conftest import Tiny, free_port, wait_http_ready


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_request_id(capsys: pytest.CaptureFixture[str],
                                                                   restore_logging: None) -> None:
    serve_cli.configure_logging("info", "json")
    log = logging.getLogger("rtd.test")
    token = request_id_var.set("req-7")
    try:
        log.info("two\nlines, %s", "formatted")
    finally:
        request_id_var.reset(token)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    log.debug("not at info")
    lines = capsys.readouterr().err.strip().split("\n")
    assert len(lines) == 2  # the message's newline and the traceback stay inside their objects
    first, second = map(json.loads, lines)
    assert set(first) == {"time", "level", "logger", "message", "request_id"}
    assert (first["level"], first["logger"], first["message"], first["request_id"]) == (
        "INFO", "rtd.test", "two\nlines, formatted", "req-7")
    assert datetime.fromisoformat(first["time"]).utcoffset() is not None
    assert second["request_id"] == "-" and second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_text_stays_the_default_and_a_bad_value_is_one_error(capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             restore_logging: None) -> None:
    monkeypatch.delenv("RTD_LOG_FORMAT", raising=False)
    serve_cli.configure_logging("info")
    logging.getLogger("rtd.test").warning("plain")
    assert capsys.readouterr().err.strip().endswith("WARNING rtd.test [-] plain")
    monkeypatch.setenv("RTD_LOG_FORMAT", "json")
    serve_cli.configure_logging("info")  # None: what Settings reads from the environment
    logging.getLogger("rtd.test").warning("structured")
    assert json.loads(capsys.readouterr().err)["message"] == "structured"
    with pytest.raises(UserError, match="RTD_LOG_FORMAT"):
        serve_cli.configure_logging("info", "xml")


@pytest.mark.slow
def test_a_real_server_logs_json_lines(tiny: Tiny, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = os.environ | {"RTD_LOG_FORMAT": "json", "RTD_PROVIDERS": "CPUExecutionProvider", "RTD_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "rtdgan.service.serve_cli", "--artifacts", str(tiny.artifacts), "--index", str(tiny.index),
         "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ready(base, server, log)
        response = httpx.post(f"{base}/search", files={"image": ("q.png", tiny.query_for("P004"))},
                              headers={"X-Request-ID": "json-trace-1"}, timeout=30)
        assert response.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    # Every line after the config line (printed before logging is set up) is one JSON object.
    lines = [line for line in log.read_text().splitlines() if not line.startswith("rtd serve: config")]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message", "request_id"} <= set(r) for r in records)
    assert any(r["request_id"] == "json-trace-1" and "POST /search -> 200" in r["message"] for r in records)
    assert any(r["logger"].startswith("uvicorn") for r in records)  # uvicorn's own lines too
