"""The TLS settings of deploy/TLS.md work as written (R12: personal data encrypted in transit).

A private CA is made per module. RabbitMQ and MongoDB are reached through a TLS-terminating proxy in
front of the real local servers (the shared servers keep their plain listeners); SMTP goes to a
Mailpit of this test's own, started with that certificate, in STARTTLS and in implicit-TLS mode.
Each case also shows that without the CA the client refuses the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from examples import records
from services.notifier.config import Settings as NotifierSettings
from services.notifier.smtp import Mailer, SmtpFailure
from shared import topology
from shared.events import AccessLogged, Envelope
from shared.mongo import connect, ping
from shared.runtime import Runtime
from shared.settings import ServiceSettings
from tests import support
from tests.support import eventually, unique

ROOT = Path(__file__).resolve().parents[2]
MAILPIT = ROOT / ".local" / "bin" / "mailpit"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for localhost / 127.0.0.1, valid for a day."""
    out = tmp_path_factory.mktemp("pki")
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("consult test CA"))
        .issuer_name(_name("consult test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(out / "ca.pem", out / "server.pem", out / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pki


@asynccontextmanager
async def tls_proxy(pki: Pki, upstream: str) -> AsyncIterator[int]:
    """Terminate TLS on a free port and pass the bytes on to `upstream` (host:port) in plain."""
    host, port = upstream.rsplit(":", 1)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    writers: list[asyncio.StreamWriter] = []

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError, OSError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writers.extend((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()


def _host_port(url: str, default: int) -> str:
    u = urlsplit(url)
    return f"{u.hostname or '127.0.0.1'}:{u.port or default}"


def _event(runtime: Runtime, request_id: str) -> Envelope[Any]:
    payload = records.access_logged(
        at=runtime.clock.now(), request_id=request_id, service="tls", method="GET", route="/", status=200
    )
    return runtime.event(payload, "office-x")


async def test_r12_amqps_with_a_private_ca_in_the_url(
    pki: Pki, amqp_url: str, make_settings: Callable[..., ServiceSettings]
) -> None:
    plain = urlsplit(amqp_url)
    async with tls_proxy(pki, _host_port(amqp_url, 5672)) as port:
        base = f"amqps://{plain.username}:{plain.password}@127.0.0.1:{port}{plain.path}"
        untrusted = aio_pika.Connection(base)  # the system CAs do not know ours
        try:
            with pytest.raises((ssl.SSLError, aio_pika.exceptions.AMQPConnectionError, ConnectionError)):
                await untrusted.connect(timeout=5)
        finally:
            await untrusted.close()
        queues = topology.ServiceQueues("tlsprobe", events=("access.logged",))
        runtime = Runtime(make_settings(ServiceSettings, amqp_url=f"{base}?cafile={pki.ca}"), queues)
        seen: list[str] = []

        @runtime.consumer.on(AccessLogged)
        async def handle(event: Envelope[Any]) -> None:
            seen.append(event.payload.request_id)

        async with runtime.running():  # topology, FastStream consumer and publisher all over TLS
            await runtime.publisher.publish(_event(runtime, "over-tls"))
            await eventually(lambda: _ready(seen), what="the event consumed over amqps")
    assert seen == ["over-tls"]


async def _ready(seen: list[str]) -> bool:
    return bool(seen)


async def test_r12_mongodb_tls_with_a_ca_file(pki: Pki, servers: None) -> None:
    async with tls_proxy(pki, _host_port(support.MONGODB_URL, 27017)) as port:
        base = f"mongodb://127.0.0.1:{port}/?tls=true"
        without = connect(base, app_name="tls-probe", timeout_ms=1500)
        try:
            assert await ping(without) is False
        finally:
            await without.close()
        client = connect(f"{base}&tlsCAFile={pki.ca}", app_name="tls-probe")
        try:
            assert await ping(client) is True
        finally:
            await client.close()


@dataclass
class TlsMailpit:
    mode: str
    smtp_port: int
    api: str


@pytest.fixture(params=["starttls", "implicit"])
def tls_mailpit(request: pytest.FixtureRequest, pki: Pki, tmp_path: Path) -> Iterator[TlsMailpit]:
    """A Mailpit of this test's own that requires STARTTLS, or speaks TLS from the first byte."""
    if not MAILPIT.exists():
        pytest.fail("no .local/bin/mailpit: run `make infra-up` (make test builds it)")
    smtp_port, http_port = support.free_port(), support.free_port()
    mode = "--smtp-require-starttls" if request.param == "starttls" else "--smtp-require-tls"
    args = [
        str(MAILPIT),
        "--smtp", f"127.0.0.1:{smtp_port}",
        "--listen", f"127.0.0.1:{http_port}",
        "--database", str(tmp_path / "mailpit.db"),
        "--smtp-tls-cert", str(pki.cert),
        "--smtp-tls-key", str(pki.key),
        mode,
        "--smtp-auth-accept-any",
        "--smtp-disable-rdns",
        "--disable-version-check",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{http_port}/api/v1"
    try:
        deadline = time.monotonic() + 15
        while not _answers(f"{api}/messages"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mailpit with {mode} did not start (exit {proc.poll()})")
            time.sleep(0.1)
        yield TlsMailpit(request.param, smtp_port, api)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _mail(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "no-reply@consult.example.org", to, "TLS probe"
    msg.set_content("本文")
    return msg


async def test_r12_smtp_starttls_and_implicit_tls_with_a_ca_file(tls_mailpit: TlsMailpit, pki: Pki) -> None:
    port = tls_mailpit.smtp_port
    if tls_mailpit.mode == "starttls":
        url, starttls = f"smtp://relay:secret@127.0.0.1:{port}", True
    else:
        url, starttls = f"smtps://relay:secret@127.0.0.1:{port}", None
    # prod settings: the notifier refuses a login over plain SMTP there, so these are the real ones
    prod: dict[str, Any] = {
        "environment": "prod",
        "secret_key": "a-real-secret-for-this-test",
        "amqp_url": "amqp://notifier:x@127.0.0.1:5672/",
        "smtp_url": url,
        "smtp_starttls": starttls,
    }
    to = f"{unique('tls-')}@example.jp"
    await Mailer(NotifierSettings(**prod, smtp_ca_file=pki.ca)).send(_mail(to))
    with pytest.raises(SmtpFailure, match=r"(?i)certificate"):
        await Mailer(NotifierSettings(**prod)).send(_mail(to))  # the system CAs do not know ours
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{tls_mailpit.api}/search", params={"query": f'to:"{to}"'})
        assert r.json()["messages_count"] == 1
