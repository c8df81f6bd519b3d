"""The API key: when one is configured, every endpoint but /health asks for it.

`eventhouse serve` refuses to bind anything but loopback without a key (settings.serve_settings).
Clients send it as `X-API-Key: <key>`, `Authorization: Bearer <key>`, or as the password of HTTP
Basic authentication, which is what a browser sends after its login prompt: the dashboards' pages
and their requests to the API then carry it without any code of ours holding the key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
from typing import Any

# the health checks (load balancers and monitors call them without credentials)
OPEN_PATHS = frozenset({"/health", "/api/analytics/health"})


def _presented_keys(headers: dict[bytes, bytes]) -> list[str]:
    keys = []
    if b"x-api-key" in headers:
        keys.append(headers[b"x-api-key"].decode("latin-1"))
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer":
        keys.append(credentials.strip())
    elif scheme.lower() == "basic":
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            keys.append(base64.b64decode(credentials.strip()).decode("utf-8").partition(":")[2])
    return keys


class ApiKeyMiddleware:
    """Pure ASGI (no per-request task, unlike BaseHTTPMiddleware): 401 unless the key matches."""

    def __init__(self, app: Any, api_key: str):
        self.app = app
        self.api_key = api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if any(hmac.compare_digest(key.encode(), self.api_key) for key in _presented_keys(headers)):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"detail": "an API key is required: send X-API-Key, Authorization: Bearer <key> or a Basic password"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Basic realm="eventhouse", charset="UTF-8"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
