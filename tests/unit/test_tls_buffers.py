"""TLS connections read into small buffers: the operator holds a hundred of them to one API server."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from asyncio import sslproto
from pathlib import Path

import pytest

from gridwise.heap import TLS_READ_BUFFER, shrink_tls_read_buffers


@pytest.fixture
def small_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shrink for this test only: asyncio's default comes back afterwards."""
    monkeypatch.setattr(sslproto.SSLProtocol, "max_size", sslproto.SSLProtocol.max_size)
    assert sslproto.SSLProtocol.max_size > TLS_READ_BUFFER, "CPython's default is 256 KiB"
    shrink_tls_read_buffers()


def _server_context(tmp_path: Path) -> ssl.SSLContext:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


async def test_a_large_answer_arrives_whole_through_a_small_buffer(
    small_buffers: None, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB: a large list answer, many TLS records
    server_ctx = _server_context(tmp_path)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(payload)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        protocol = writer.transport.get_protocol()  # the app's side; the TLS layer is below it
        tls = writer.transport._ssl_protocol  # type: ignore[attr-defined]
        assert isinstance(tls, sslproto.SSLProtocol) and protocol is not tls
        # CPython's private buffer, which typeshed's SSLProtocol does not declare.
        assert len(tls._ssl_buffer) == TLS_READ_BUFFER  # type: ignore[attr-defined]
        assert await reader.read() == payload
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
