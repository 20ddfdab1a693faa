"""Turning a coordinator URL, a token and TLS settings into a gRPC channel and call metadata,
the same way for the sync and asyncio clients and the worker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union
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


#: A PEM setting: a file's path, or the PEM itself (bytes, or a str starting ``-----BEGIN``).
PemSource = Union[str, "os.PathLike[str]", bytes]

#: The environment variable each setting defaults to, as for the ``celeritas`` command line.
ENVIRONMENT = {
    "token": "CELERITAS_TOKEN",
    "tls_ca": "CELERITAS_TLS_CA",
    "tls_cert": "CELERITAS_TLS_CERT",
    "tls_key": "CELERITAS_TLS_KEY",
}


@dataclass(frozen=True)
class Tls:
    """What an ``https://`` channel trusts and presents, read from the files given."""

    #: The CA certificates to trust (PEM); None trusts the system's roots.
    root_certificates: bytes | None = None
    #: The client certificate (PEM) and its private key, presented as the caller's identity.
    certificate_chain: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


@dataclass(frozen=True)
class Connection:
    """A coordinator and the credentials to reach it with: what :func:`connection` makes."""

    endpoint: Endpoint
    tls: Tls | None = None
    #: The call metadata (the token's ``authorization`` header); never shown by ``repr``.
    metadata: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def sync_channel(self) -> grpc.Channel:
        if self.endpoint.secure:
            credentials = (self.tls or Tls()).credentials()
            return grpc.secure_channel(self.endpoint.target, credentials, channel_options())
        return grpc.insecure_channel(self.endpoint.target, channel_options())

    def async_channel(self) -> grpc.aio.Channel:
        if self.endpoint.secure:
            credentials = (self.tls or Tls()).credentials()
            return grpc.aio.secure_channel(self.endpoint.target, credentials, channel_options())
        return grpc.aio.insecure_channel(self.endpoint.target, channel_options())


def _setting(
    name: str, value: Any, environment: Mapping[str, str] | None
) -> tuple[Any, str]:
    """The setting's value, from the argument or else its environment variable, and how to
    name it in an error."""
    if value is not None:
        return value, name
    if environment is None:
        return None, name
    variable = ENVIRONMENT[name]
    from_environment = environment.get(variable) or None
    return from_environment, name if from_environment is None else f"{name} (${variable})"


def read_pem(what: str, source: PemSource) -> bytes:
    """The PEM of a setting: the bytes given, a str holding PEM, or the file at a path.
    Errors (``ValueError``) name the setting, never the file's content."""
    if isinstance(source, bytes):
        data = source
    elif isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        data = source.encode()
    elif isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path:
            raise ValueError(f"{what}: empty; expected a PEM file's path")
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as error:
            raise ValueError(f"{what}: cannot read {path}: {error.strerror or error}") from None
        if b"-----BEGIN" not in data:
            raise ValueError(f"{what}: {path} is not PEM (no -----BEGIN line)")
        return data
    else:
        raise TypeError(f"{what}: expected a path or PEM bytes, not {type(source).__name__}")
    if b"-----BEGIN" not in data:
        raise ValueError(f"{what}: not PEM (no -----BEGIN line)")
    return data


def connection(
    url: str,
    token: str | None = None,
    *,
    tls_ca: PemSource | None = None,
    tls_cert: PemSource | None = None,
    tls_key: PemSource | None = None,
    environment: Mapping[str, str] | None = os.environ,
) -> Connection:
    """Checks and reads the settings of a connection to ``url``.

    Each setting not given is read from ``environment`` (``$CELERITAS_TOKEN``,
    ``$CELERITAS_TLS_CA``, ``$CELERITAS_TLS_CERT``, ``$CELERITAS_TLS_KEY``; None reads none), as
    the ``celeritas`` command line does. A CA or client certificate with a plaintext URL is
    refused (``ValueError``), never sent without TLS or silently dropped.
    """
    endpoint = parse_url(url)
    token, token_name = _setting("token", token, environment)
    ca, ca_name = _setting("tls_ca", tls_ca, environment)
    cert, cert_name = _setting("tls_cert", tls_cert, environment)
    key, key_name = _setting("tls_key", tls_key, environment)
    metadata = call_metadata(token, token_name)
    given = [name for name, value in ((ca_name, ca), (cert_name, cert), (key_name, key)) if value is not None]
    if not endpoint.secure:
        if given:
            raise ValueError(
                f"{given[0]}: a CA or a client certificate is for TLS; use an https:// URL, not "
                f"{url!r} (celeritas never sends them in plaintext)"
            )
        return Connection(endpoint=endpoint, metadata=metadata)
    if (cert is None) != (key is None):
        missing, present = (key_name, cert_name) if key is None else (cert_name, key_name)
        raise ValueError(f"{missing}: needed with {present} (a client certificate and its key go together)")
    tls = Tls(
        root_certificates=read_pem(ca_name, ca) if ca is not None else None,
        certificate_chain=read_pem(cert_name, cert) if cert is not None else None,
        private_key=read_pem(key_name, key) if key is not None else None,
    )
    return Connection(endpoint=endpoint, tls=tls, metadata=metadata)


def call_metadata(token: str | None, what: str = "token") -> tuple[tuple[str, str], ...]:
    """What every call carries: the token as `authorization: Bearer <token>` when given."""
    if token is None:
        return ()
    if not isinstance(token, str):
        raise TypeError(f"{what}: expected a str, not {type(token).__name__}")
    token = token.strip()
    if not token or any(character in token for character in "\r\n"):
        raise ValueError(f"{what}: must be non-empty and on one line")
    if not token.isascii() or not token.isprintable():
        raise ValueError(f"{what}: must be printable ASCII")
    return (("authorization", f"Bearer {token}"),)
