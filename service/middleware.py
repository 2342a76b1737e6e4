"""The outermost ASGI layer: request id, body-size limit, access log, HTTP metrics, last-resort 500.

Written as plain ASGI (not BaseHTTPMiddleware) so the upload limit is enforced while the body streams in:
a `Content-Length` over the limit is refused before a byte is read, and a chunked body is cut off as
soon as it passes the limit, never buffered whole first.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

log = logging.getLogger("service.access")

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BODY_METHODS = {"POST", "PUT", "PATCH"}


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


async def _send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


class RequestContextMiddleware:
    """Request id in, request id out, body limit, metrics and access log for every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode())
        start = time.perf_counter()
        status = 500
        started = False
        received = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        too_large = {"error": "too_large", "detail": f"request body is larger than {self.max_body_bytes} bytes"}
        try:
            length = headers.get("content-length", "")
            if scope["method"] in BODY_METHODS and length.isdigit() and int(length) > self.max_body_bytes:
                status = 413  # refused on the header alone: the body is never read
                await _send_json(send, 413, too_large, [id_header, (b"connection", b"close")])
            else:
                await self.app(scope, receive_limited, send_with_id)
        except BodyTooLarge:
            if started:
                raise
            status = 413
            await _send_json(send, 413, too_large, [id_header, (b"connection", b"close")])
        except Exception:  # noqa: BLE001 - the last resort: log the traceback here, never send it
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if started:
                raise
            status = 500
            await _send_json(send, 500, {"error": "internal_error", "detail": f"internal error (request id "
                                         f"{request_id}); the server log has the details"}, [id_header])
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.latency.labels(scope["method"], template, str(status)).observe(seconds)
            log.info("%s %s -> %d in %.1f ms", scope["method"], scope["path"], status, seconds * 1000)
            request_id_var.reset(token)
