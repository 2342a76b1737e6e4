"""HTTP timeouts and limits over a real socket (uvicorn with `uvicorn_options`), the lingering 413, deadlines.

Slow clients: headers or a body trickling in are cut off within their timeout, an idle kept-alive connection
is closed, connections past the limit get 503. A 413 reaches a client that sends its whole body before reading
(Python's urllib), not a reset. A request past its deadline is not started on the next stage: 503
deadline_exceeded + Retry-After, and the model never sees it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import anyio
import httpx
import numpy as np
import pytest

from rtdgan.index.runtime.onnx import OnnxGenerator, OnnxModel
from tests.service.conftest import Tiny, running_client, settings_for, uvicorn_server

MIB = 1 << 20
SLACK_S = 2.0  # scheduling slack on a loaded 2-core machine
HEADER_S, BODY_S, KEEP_ALIVE_S = 1.0, 1.5, 0.5


@pytest.fixture(scope="module")
def fast_timeouts(tiny: Tiny) -> Iterator[tuple[str, int]]:
    """A server with short header, body and keep-alive timeouts: (host, port)."""
    settings = settings_for(tiny, header_timeout_s=HEADER_S, body_timeout_s=BODY_S, keep_alive_timeout_s=KEEP_ALIVE_S)
    with uvicorn_server(settings) as base:
        host, port = base.removeprefix("http://").split(":")
        yield host, int(port)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"", every_s: float = 0.2) -> tuple[float, bytes]:
    """Read (sending one byte of `trickle` every `every_s` meanwhile) until the server closes the connection;
    (seconds until the close, everything read). Fails if it is still open after `seconds`."""
    start, data, sent = time.monotonic(), b"", 0
    while time.monotonic() - start < seconds:
        if select.select([sock], [], [], every_s)[0]:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - start, data
            if not chunk:
                return time.monotonic() - start, data
            data += chunk
        elif sent < len(trickle):
            try:
                sock.sendall(trickle[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start, data
            sent += 1
    raise AssertionError(f"still open after {seconds} s (sent {sent} bytes, read {data[:200]!r})")


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(fast_timeouts: tuple[str, int]) -> None:
    with socket.create_connection(fast_timeouts, timeout=10) as sock:
        elapsed, data = closed_within(sock, HEADER_S + SLACK_S)
    assert data == b"" and elapsed >= HEADER_S * 0.8


def test_headers_sent_slowly_are_cut_off_within_the_header_timeout(fast_timeouts: tuple[str, int]) -> None:
    # One byte every 0.2 s: every byte would reset an idle timer, the header timer still runs out.
    head = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    with socket.create_connection(fast_timeouts, timeout=10) as sock:
        elapsed, data = closed_within(sock, HEADER_S + SLACK_S, trickle=head)
    assert data == b"" and HEADER_S * 0.8 <= elapsed


def test_a_body_sent_at_a_trickle_gets_408_within_the_body_timeout(fast_timeouts: tuple[str, int]) -> None:
    head = (b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000\r\n\r\n")
    with socket.create_connection(fast_timeouts, timeout=10) as sock:
        sock.sendall(head)
        part = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        elapsed, data = closed_within(sock, BODY_S + SLACK_S, trickle=part + b"\0" * (1000 - len(part)))
    assert elapsed >= BODY_S * 0.8
    assert data.startswith(b"HTTP/1.1 408"), data[:300]
    assert b"connection: close" in data.lower()
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"] == "body_timeout"


def test_a_body_nobody_reads_is_cut_off_too(fast_timeouts: tuple[str, int]) -> None:
    # An unknown path is answered 404 before its body is read; uvicorn alone would then read and discard the
    # body for as long as it trickles in. The connection's body timer closes it.
    head = b"POST /no-such-route HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
    with socket.create_connection(fast_timeouts, timeout=10) as sock:
        sock.sendall(head)
        elapsed, data = closed_within(sock, BODY_S + 1 + SLACK_S, trickle=b"x" * 1000)
    assert data.startswith(b"HTTP/1.1 404"), data[:300]


def test_an_idle_kept_alive_connection_is_closed(fast_timeouts: tuple[str, int]) -> None:
    with socket.create_connection(fast_timeouts, timeout=10) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        elapsed, data = closed_within(sock, KEEP_ALIVE_S + SLACK_S)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]
    assert elapsed < HEADER_S + SLACK_S


def test_connections_past_the_limit_get_503(tiny: Tiny) -> None:
    with uvicorn_server(settings_for(tiny, max_connections=2, retry_after_s=2)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))), socket.create_connection((host, int(port))) as second:
            time.sleep(0.3)  # both accepted: the limit is reached
            over = httpx.get(f"{base}/health/live", timeout=10)
            second.close()
            time.sleep(0.3)
            fits = httpx.get(f"{base}/health/live", timeout=10)
    assert over.status_code == 503 and over.headers["retry-after"] == "2"
    assert over.json()["error"] == "overloaded"
    assert fits.status_code == 200


# ---- the 413 reaches a client that is still sending ----------------------------------------------------------


@pytest.fixture(scope="module")
def ten_mib_limit(tiny: Tiny) -> Iterator[str]:
    with uvicorn_server(settings_for(tiny, max_upload_bytes=10 * MIB)) as base:
        yield base


@pytest.mark.parametrize("megabytes", [11, 13, 15, 18, 20])
def test_urllib_sending_too_much_reads_the_413_not_a_reset(ten_mib_limit: str, megabytes: int) -> None:
    # urllib sends the whole body before it reads a byte: a server that answers and closes without reading
    # the body resets the connection, and urllib raises ConnectionResetError instead of the HTTPError 413.
    request = urllib.request.Request(f"{ten_mib_limit}/search", data=b"\0" * (megabytes * MIB), method="POST",
                                     headers={"Content-Type": "multipart/form-data; boundary=b"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert json.loads(refused.value.read())["error"] == "too_large"


@pytest.mark.parametrize("megabytes", [11, 20])
def test_a_chunked_body_cut_off_while_streaming_reaches_its_413_too(ten_mib_limit: str, megabytes: int) -> None:
    # No Content-Length: the body is cut off once it passes the limit; the client sends it all, then reads.
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(megabytes * 16):
            yield b"\0" * (MIB // 16)

    host, port = ten_mib_limit.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request("POST", "/search", body=body(), encode_chunked=True,
                     headers={"Content-Type": "multipart/form-data; boundary=b"})
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"] == "too_large"
    finally:
        conn.close()


def test_the_drain_is_bounded_in_time(tiny: Tiny) -> None:
    # A client that stops sending half way: it has its 413 at once, and the connection is closed at the body
    # timeout, not held open waiting for the rest.
    with uvicorn_server(settings_for(tiny, max_upload_bytes=MIB, body_timeout_s=BODY_S)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: 5000000\r\n\r\n" + b"\0" * 100_000)
            elapsed, data = closed_within(sock, BODY_S + SLACK_S)
    assert data.startswith(b"HTTP/1.1 413"), data[:300]
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["error"] == "too_large"
    assert elapsed >= BODY_S * 0.5


# ---- request deadlines --------------------------------------------------------------------------------------


def test_a_request_past_its_deadline_is_503_before_any_model_runs(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_client(settings_for(tiny, request_timeout_ms=0.001, retry_after_s=4)) as client:
        calls: list[int] = []

        def counting(self: OnnxGenerator, batch: np.ndarray) -> np.ndarray:
            calls.append(len(batch))
            return OnnxModel.__call__(self, batch)

        monkeypatch.setattr(OnnxGenerator, "__call__", counting, raising=False)
        for route in ("/search", "/generate"):
            response = client.post(route, files={"image": ("q.png", tiny.query_for("P001"), "image/png")})
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "4"
            body = response.json()
            assert body["error"] == "deadline_exceeded" and "decode" in body["detail"]
    assert calls == []


def test_the_deadline_starts_once_the_body_is_in(tiny: Tiny) -> None:
    # A slow upload is bounded by the body timeout, not by the request deadline: it is still served.
    image = tiny.query_for("P002")
    body = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + image + b"\r\n--b--\r\n")
    with uvicorn_server(settings_for(tiny, request_timeout_ms=300, body_timeout_s=10)) as base:
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Type: multipart/form-data; boundary=b\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body) + body[:50])
            time.sleep(0.8)  # longer than the deadline
            sock.sendall(body[50:])
            _, data = closed_within(sock, 10)
    assert data.startswith(b"HTTP/1.1 200"), data[:300]


def test_a_request_waiting_past_its_deadline_is_dropped_not_run(tiny: Tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    running, gate = threading.Event(), threading.Event()
    batches: list[int] = []

    def slow_generator(self: OnnxGenerator, batch: np.ndarray) -> np.ndarray:
        batches.append(len(batch))
        running.set()
        gate.wait(20)
        return OnnxModel.__call__(self, batch)

    async def fire(base: str) -> tuple[list[httpx.Response], float]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            def post() -> asyncio.Future:
                return asyncio.ensure_future(client.post("/generate", files={"image": ("q.png", tiny.query_for("P000"))}))

            start = time.monotonic()
            first = post()
            await anyio.to_thread.run_sync(running.wait, 20)  # the first holds the generator
            second = post()  # waits in the generator's queue, past its deadline
            responses = await asyncio.gather(first, second)
            return responses, time.monotonic() - start

    with uvicorn_server(settings_for(tiny, request_timeout_ms=400, retry_after_s=2)) as base:
        monkeypatch.setattr(OnnxGenerator, "__call__", slow_generator, raising=False)
        try:
            responses, elapsed = asyncio.run(fire(base))
        finally:
            gate.set()
        time.sleep(0.3)  # the generator finishes the first batch; the collector takes the next (dropped) item
        assert batches == [1]  # the second request never reached the model
        later = httpx.post(f"{base}/generate", files={"image": ("q.png", tiny.query_for("P000"))}, timeout=30)
    # Both are answered at their deadline, not when the model is done (the first one's result is discarded).
    assert elapsed < 5
    for response in responses:
        assert response.status_code == 503 and response.headers["retry-after"] == "2"
        assert response.json()["error"] == "deadline_exceeded"
    assert later.status_code == 200 and batches == [1, 1]
