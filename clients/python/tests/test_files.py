"""Files through the API against the shared server: upload from a path or a file object, sync
and asyncio, and the refusals a client sees."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
from pathlib import Path

import grpc
import pytest

import celeritas
from celeritas.testing import DevServer
from celeritas.v1 import files_pb2, files_pb2_grpc


def downloaded(server: DevServer, file_id: str) -> bytes:
    """The file's bytes, read back over raw gRPC (the client has no download yet)."""
    with grpc.insecure_channel(server.url.removeprefix("http://")) as channel:
        stub = files_pb2_grpc.FileServiceStub(channel)
        responses = stub.Download(files_pb2.DownloadRequest(file_id=file_id), timeout=30)
        return b"".join(response.chunk for response in responses)


def test_upload_a_path_and_a_file_object(
    client: celeritas.Client, server: DevServer, tmp_path: Path
) -> None:
    content = os.urandom(2 * 1024 * 1024 + 17)
    path = tmp_path / "contacts.csv"
    path.write_bytes(content)

    stored = client.upload(path, content_type="text/csv")
    assert (stored.name, stored.content_type, stored.size) == (
        "contacts.csv",
        "text/csv",
        len(content),
    )
    assert stored.sha256 == hashlib.sha256(content).hexdigest()
    assert stored.created_at is not None
    assert downloaded(server, stored.file_id) == content

    from_object = client.upload(io.BytesIO(b"email\na@example.com\n"), name="inline.csv")
    assert (from_object.name, from_object.content_type, from_object.size) == (
        "inline.csv",
        "application/octet-stream",
        20,
    )
    with pytest.raises(ValueError, match="name"):
        client.upload(io.BytesIO(b"nameless"))
    with pytest.raises(celeritas.InvalidArgument, match=r"header\.name"):
        client.upload(io.BytesIO(b"x"), name="")


def test_upload_from_asyncio(server: DevServer, tmp_path: Path) -> None:
    content = os.urandom(1024 * 1024 + 3)
    path = tmp_path / "async.bin"
    path.write_bytes(content)

    async def scenario() -> tuple[celeritas.StoredFile, celeritas.StoredFile]:
        async with celeritas.AsyncClient(server.url) as client:
            from_path = await client.upload(str(path))
            from_object = await client.upload(io.BytesIO(content), name="copy.bin")
            return from_path, from_object

    from_path, from_object = asyncio.run(scenario())
    assert from_path.name == "async.bin" and from_object.name == "copy.bin"
    assert from_path.sha256 == from_object.sha256 == hashlib.sha256(content).hexdigest()
    assert from_path.file_id != from_object.file_id
    assert downloaded(server, from_object.file_id) == content
