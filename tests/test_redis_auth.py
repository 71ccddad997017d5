"""An external Redis reached by URL, with a password and over TLS (mutual), as configured."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, ConnectionError

from daemon.config import RedisConfig
from daemon.memory.store import connect
from tests.harness import free_port

PASSWORD = "s3cret-for-tests"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA, and a server and a client certificate it signed (127.0.0.1)."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=tmp_path)  # fmt: skip
    (tmp_path / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=tmp_path)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", "san.cnf",
                "-out", f"{name}.pem", cwd=tmp_path)  # fmt: skip
    return tmp_path


def started(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("redis-server did not start")


@pytest.fixture
def tls_redis(certificates: Path) -> Iterator[int]:
    port = free_port()
    proc = started(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--requirepass", PASSWORD,
         "--tls-cert-file", str(certificates / "server.pem"),
         "--tls-key-file", str(certificates / "server.key"),
         "--tls-ca-cert-file", str(certificates / "ca.pem"),
         "--tls-auth-clients", "yes", "--save", "", "--dir", str(certificates)],
        port,
    )  # fmt: skip
    yield port
    proc.terminate()
    proc.wait(10)


async def test_password_from_config_not_url(tmp_path: Path) -> None:
    port = free_port()
    proc = started(
        ["redis-server", "--port", str(port), "--requirepass", PASSWORD, "--save", "",
         "--dir", str(tmp_path)],
        port,
    )  # fmt: skip
    try:
        url = f"redis://127.0.0.1:{port}/0"
        without = connect(url, RedisConfig(url=url))
        with pytest.raises(AuthenticationError):
            await without.ping()
        await without.aclose()
        client = connect(url, RedisConfig(url=url, password=PASSWORD))
        assert await client.set("k", "v") and await client.get("k") == "v"
        await client.aclose()
    finally:
        proc.terminate()
        proc.wait(10)


async def test_mutual_tls_with_password(tls_redis: int, certificates: Path) -> None:
    url = f"rediss://127.0.0.1:{tls_redis}/0"
    cfg = RedisConfig(
        url=url,
        password=PASSWORD,
        tls_ca_file=str(certificates / "ca.pem"),
        tls_cert_file=str(certificates / "client.pem"),
        tls_key_file=str(certificates / "client.key"),
    )
    client = connect(url, cfg)
    assert await client.ping()
    await client.aclose()
    # Without the client certificate the server refuses the handshake.
    anonymous = connect(url, cfg.model_copy(update={"tls_cert_file": "", "tls_key_file": ""}))
    with pytest.raises(ConnectionError):
        await anonymous.ping()
    await anonymous.aclose()
