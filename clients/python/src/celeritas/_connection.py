"""Turning a coordinator URL and a token into a gRPC channel and call metadata, the same way for
the sync and asyncio clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc

from celeritas._version import __version__

# The server accepts messages up to 64 MiB (`max_message_bytes`); a page of 10,000 records or
# a large batch answer may pass gRPC's default 4 MiB receive limit, so match the server.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Endpoint:
    """Where a coordinator listens, parsed from a URL."""

    #: The gRPC target: `host:port`, or a `unix:` path.
    target: str
    #: Whether to use TLS (`https://`).
    secure: bool


def parse_url(url: str) -> Endpoint:
    """Accepts `http://host:port` (plaintext, as the CLI's `--coordinator`), `https://host[:port]`
    (TLS with the system's roots), a bare `host:port` (plaintext), or `unix:/path`."""
    if url.startswith("unix:"):
        return Endpoint(target=url, secure=False)
    if "://" not in url:
        if not url:
            raise ValueError("url: empty; expected something like http://127.0.0.1:50051")
        return Endpoint(target=url, secure=False)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"url: unsupported scheme {parts.scheme!r} in {url!r}; use http or https")
    if not parts.hostname:
        raise ValueError(f"url: no host in {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"url: a coordinator URL has no path or query: {url!r}")
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    return Endpoint(target=f"{host}:{port}", secure=secure)


def channel_options() -> list[tuple[str, Any]]:
    return [
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
        ("grpc.primary_user_agent", f"celeritas-python/{__version__}"),
        # gRPC's own reconnection backoff starts at 1 s and grows to 2 minutes; a channel in that
        # backoff fails calls at once without trying. Keep it within the client's retry policy so
        # a retried call finds a restarted coordinator.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """What every call carries: the token as `authorization: Bearer <token>` when given."""
    if token is None:
        return ()
    if not token or any(character in token for character in "\r\n"):
        raise ValueError("token: must be non-empty and on one line")
    return (("authorization", f"Bearer {token}"),)


def sync_channel(endpoint: Endpoint) -> grpc.Channel:
    if endpoint.secure:
        return grpc.secure_channel(endpoint.target, grpc.ssl_channel_credentials(), channel_options())
    return grpc.insecure_channel(endpoint.target, channel_options())


def async_channel(endpoint: Endpoint) -> grpc.aio.Channel:
    if endpoint.secure:
        return grpc.aio.secure_channel(
            endpoint.target, grpc.ssl_channel_credentials(), channel_options()
        )
    return grpc.aio.insecure_channel(endpoint.target, channel_options())
