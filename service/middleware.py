"""The outermost ASGI layer: request id, body-size limit, body timeout, access log, HTTP metrics, last-resort
500; and below it, the limits uvicorn lacks (`uvicorn_options`: header timeout, connection limit).

Written as plain ASGI (not BaseHTTPMiddleware) so the upload limit is enforced while the body streams in:
a `Content-Length` over the limit is refused before the body is used, and a chunked body is cut off as
soon as it passes the limit, never buffered whole first. The whole body must arrive within `body_timeout_s`
(else 408 and a close), so a client sending 1 byte/s cannot hold a request open.

A refused body (413) gets a lingering close, as nginx does: the 413 is sent at once, then the rest of the
body is read and discarded (up to `drain_limit_bytes`, within the body timeout) before the connection is
closed. Closing with unread bytes makes the kernel answer with a reset, and a client that sends its whole
body before reading (Python's urllib) would see that reset instead of the 413.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rtdgan.service.metrics import Metrics
from rtdgan.service.settings import Settings

log = logging.getLogger("rtdgan.service.access")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BODY_METHODS = {"POST", "PUT", "PATCH"}
# The connection-level body timer (uvicorn_options) fires this long after the middleware's own, so the
# middleware answers 408 when it is reading the body; the timer only closes what nobody reads.
BODY_BACKSTOP_GRACE_S = 1.0


@dataclasses.dataclass
class RequestClock:
    """When the current request arrived and when its whole body was in (time.monotonic() seconds)."""

    arrived: float
    body_received: float | None = None


request_clock: contextvars.ContextVar[RequestClock | None] = contextvars.ContextVar("request_clock", default=None)


def body_received_at() -> float | None:
    """When the current request's body was all in (None outside a request, or before): where the routes'
    request deadline starts, so a slow upload (bounded by the body timeout) does not use it up."""
    clock = request_clock.get()
    return clock.body_received if clock is not None else None


def install_request_id_logging() -> None:
    """Give every log record a `request_id` attribute (the current request's, or "-"), once per process."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "rtd_request_id", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id_var.get()
        return record

    factory.rtd_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class BodyTooLarge(HTTPException):
    """Raised from `receive` when the request body passes the limit (an HTTPException, so the framework's
    body parsing passes it through instead of turning it into a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


class BodyTimeout(HTTPException):
    """Raised from `receive` when the body has not arrived within the body timeout (-> 408 and a close)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"the request body did not arrive within {timeout_s:g} s")


@dataclasses.dataclass(frozen=True)
class _Refusal:
    """How the middleware answers a refused body, whatever the app made of the exception."""

    status: int
    code: str
    detail: str
    drain: bool  # read and discard the rest of the body before closing (a lingering close)


async def _drain(receive: Receive, limit: int, deadline: float) -> int:
    """Read and discard the rest of the request body: up to `limit` bytes, until `deadline` (monotonic)."""
    drained = 0
    while drained <= limit:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except asyncio.TimeoutError:
            break
        if message["type"] != "http.request":
            break  # the client has gone
        drained += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return drained


async def _send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class RequestContextMiddleware:
    """Request id in, request id out, body limit and timeout, metrics and access log for every HTTP request.

    `body_timeout_s` and `drain_limit_bytes` default to the app's settings (`scope["app"].state.settings`,
    as `create_app` sets them), else to the Settings defaults."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, body_timeout_s: float | None = None,
                 drain_limit_bytes: int | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.drain_limit_bytes = drain_limit_bytes

    @staticmethod
    async def _refuse(send: Send, receive: Receive, refusal: _Refusal, id_header: tuple[bytes, bytes], *, drain: bool,
                      drain_limit: int, deadline: float) -> None:
        """Answer a refused body and close; with `drain`, a lingering close: the answer goes out at once, the
        rest of the body is read and discarded, and only then is the response (and the connection) ended."""
        data = json.dumps({"error": refusal.code, "detail": refusal.detail}).encode()
        await send({"type": "http.response.start", "status": refusal.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                                id_header, (b"connection", b"close")]})
        if not drain:
            await send({"type": "http.response.body", "body": data})
            return
        await send({"type": "http.response.body", "body": data, "more_body": True})
        drained = await _drain(receive, drain_limit, deadline)
        log.debug("drained %d bytes of a refused body", drained)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _limits(self, scope: Scope) -> tuple[float, int]:
        """(body_timeout_s, drain_limit_bytes): as given, else the app's settings, else Settings' defaults."""
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        fields = Settings.model_fields
        body_timeout_s = (self.body_timeout_s if self.body_timeout_s is not None else
                          settings.body_timeout_s if settings is not None else fields["body_timeout_s"].default)
        drain_limit = (self.drain_limit_bytes if self.drain_limit_bytes is not None else
                       settings.drain_limit_bytes if settings is not None else fields["drain_limit_bytes"].default)
        return body_timeout_s, drain_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        body_timeout_s, drain_limit = self._limits(scope)
        start = time.perf_counter()
        clock = RequestClock(time.monotonic())
        clock_token = request_clock.set(clock)
        body_deadline = clock.arrived + body_timeout_s  # the whole body must be in by then
        status = 500
        started = False
        received = 0
        body_done = False  # the last body chunk (or a disconnect) has been received
        refused: _Refusal | None = None
        too_large = _Refusal(413, "too_large", f"request body is larger than {self.max_body_bytes} bytes", True)

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if refused is not None and not started:
                return  # the body was refused: answered below, whatever the app made of the exception
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        async def receive_limited() -> Message:
            nonlocal received, body_done, refused
            if body_done:
                return await receive()  # after the body: waiting for a disconnect has no deadline
            try:
                message = await asyncio.wait_for(receive(), max(0.0, body_deadline - time.monotonic()))
            except asyncio.TimeoutError:
                refused = _Refusal(408, "body_timeout", f"the request body did not arrive within {body_timeout_s:g} s",
                                   False)
                raise BodyTimeout(body_timeout_s) from None
            if message["type"] != "http.request":
                body_done = True  # http.disconnect
                return message
            body_done = not message.get("more_body", False)
            if body_done:
                clock.body_received = time.monotonic()
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:
                refused = too_large
                raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            try:
                length = headers.get("content-length", "")
                if scope["method"] in BODY_METHODS and length.isdigit() and int(length) > self.max_body_bytes:
                    # Refused on the header alone. Drain the body unless it is past the drain limit (then closing
                    # at once costs less) or the client waits for "100 Continue" before sending it (it never will).
                    lingering = int(length) <= drain_limit and "100-continue" not in headers.get("expect", "").lower()
                    refused = dataclasses.replace(too_large, drain=lingering)
                else:
                    await self.app(scope, receive_limited, send_with_id)
            except (BodyTooLarge, BodyTimeout):
                if started:
                    raise
            except Exception:  # noqa: BLE001 - the last resort: log the traceback here, never send it
                if refused is None or started:
                    log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                    if started:
                        raise
                    status = 500
                    await _send_json(send, 500, {"error": "internal_error", "detail": f"internal error (request id "
                                                 f"{request_id}); the server log has the details"}, [id_header])
            if refused is not None and not started:
                status = refused.status
                await self._refuse(send, receive, refused, id_header, drain=refused.drain and not body_done,
                                   drain_limit=drain_limit, deadline=body_deadline)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(seconds)
            log.info("%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, seconds * 1000)
            request_clock.reset(clock_token)
            request_id_var.reset(token)


# ---- below the ASGI app: the connection limits uvicorn's h11 protocol lacks --------------------------------


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config / uvicorn.run keyword arguments for these settings' HTTP limits (`rtd serve` and the tests).

    uvicorn has a keep-alive timeout (`timeout_keep_alive`) but no header or body timeout, and a fresh
    connection that sends nothing is held forever. Its h11 protocol is used here with three additions:

    - header timeout: a connection must complete its request line and headers within `header_timeout_s` of
      opening, or of the first byte of its next request when kept alive; else it is closed;
    - body backstop: a body still arriving `body_timeout_s` (+ a grace) after its headers is cut off by closing
      the connection, also when the app does not read it (the middleware answers 408 when it does);
    - connection limit: past `max_connections` open connections, a request is answered 503 + Retry-After
      (JSON, `Connection: close`) without reaching the app, as uvicorn's `limit_concurrency` would (in text).
    """
    return {"http": _limited_h11_protocol(settings.header_timeout_s, settings.body_timeout_s + BODY_BACKSTOP_GRACE_S,
                                          settings.max_connections, settings.retry_after_s),
            "timeout_keep_alive": settings.keep_alive_timeout_s}


def _limited_h11_protocol(header_timeout_s: float, body_timeout_s: float, max_connections: int,
                          retry_after_s: int) -> type[asyncio.Protocol]:
    """uvicorn's H11Protocol with a header timer, a body timer and a connection limit (see uvicorn_options)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    busy = {"error": "overloaded", "detail": f"the server has {max_connections} connections open, its limit; "
            "try again shortly"}
    busy_headers = [(b"retry-after", str(retry_after_s).encode()), (b"connection", b"close")]

    class LimitedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._body_timer: asyncio.TimerHandle | None = None
            app = self.app

            async def limited(scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "http" and len(self.connections) > max_connections:
                    log.warning("%d connections open, past the limit of %d: 503", len(self.connections),
                                max_connections)
                    await _send_json(send, 503, busy, busy_headers)
                    return
                await app(scope, receive, send)

            self.app = limited

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._update_timers(arm_header=True)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._update_timers(arm_header=True)  # bytes of a request head: its header timer runs from here

        def on_response_complete(self) -> None:
            super().on_response_complete()  # arms the keep-alive timer; may start a pipelined request
            self._update_timers(arm_header=False)  # an idle kept-alive connection is the keep-alive timer's

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            self._cancel_timers()

        def _update_timers(self, arm_header: bool) -> None:
            """Header timer while waiting for a request head (h11: client IDLE), body timer while its body
            arrives (SEND_BODY); neither once the request is in."""
            if self.transport is None or self.transport.is_closing():
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if arm_header and self._header_timer is None:
                    self._header_timer = self.loop.call_later(header_timeout_s, self._expired, h11.IDLE, "header")
            elif self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            if state is h11.SEND_BODY:
                if self._body_timer is None:
                    self._body_timer = self.loop.call_later(body_timeout_s, self._expired, h11.SEND_BODY, "body")
            elif self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _cancel_timers(self) -> None:
            for timer in (self._header_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._header_timer = self._body_timer = None

        def _expired(self, state: type, what: str) -> None:
            if what == "header":
                self._header_timer = None
            else:
                self._body_timer = None
            if self.conn.their_state is state and not self.transport.is_closing():
                log.debug("closing a connection from %s: its request %s did not arrive in time", self.client, what)
                self.transport.close()  # connection_lost tells a running request it is gone

    return LimitedH11Protocol
