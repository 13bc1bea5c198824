"""Where the bench runs: its own RabbitMQ vhost and database prefix, machine facts, server versions.

Everything the bench creates carries the run id and is removed afterwards: the vhost is deleted
through the management API and every database whose name starts with the prefix is dropped.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aio_pika
import httpx
from pymongo import AsyncMongoClient

ROOT = Path(__file__).resolve().parent.parent

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
RABBITMQ_API = os.environ.get("RABBITMQ_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/api")
MONGODB_URL = os.environ.get("MONGODB_URL", "mongodb://127.0.0.1:27017/")
SMTP_URL = os.environ.get("SMTP_URL", "smtp://127.0.0.1:1025")
MAILPIT_API = os.environ.get("MAILPIT_API", "http://127.0.0.1:8025/api/v1")

Doc = dict[str, Any]


def vhost_url(vhost: str) -> str:
    base = AMQP_URL.rstrip("/")
    if base.count("/") > 2:  # a vhost is already in the URL
        base = base.rsplit("/", 1)[0]
    return f"{base}/{quote(vhost, safe='')}"


@dataclass
class Sandbox:
    """One bench run's vhost and database prefix."""

    run_id: str
    vhost: str
    amqp_url: str
    db_prefix: str


async def check_servers() -> dict[str, str]:
    """Which servers do not answer, and why (empty when all do)."""
    problems: dict[str, str] = {}
    try:
        conn = await aio_pika.connect(AMQP_URL, timeout=3)
        await conn.close()
    except Exception as exc:
        problems["RabbitMQ"] = f"{AMQP_URL}: {exc}"
    client: AsyncMongoClient[Doc] = AsyncMongoClient(MONGODB_URL, serverSelectionTimeoutMS=3000)
    try:
        await client.admin.command("ping")
    except Exception as exc:
        problems["MongoDB"] = f"{MONGODB_URL}: {exc}"
    finally:
        await client.close()
    try:
        async with httpx.AsyncClient(timeout=3) as c:
            (await c.get(f"{MAILPIT_API}/info")).raise_for_status()
    except Exception as exc:
        problems["Mailpit"] = f"{MAILPIT_API}: {exc}"
    return problems


async def create_vhost(name: str) -> str:
    async with httpx.AsyncClient(timeout=10) as c:
        (await c.put(f"{RABBITMQ_API}/vhosts/{quote(name, safe='')}")).raise_for_status()
        user = httpx.URL(RABBITMQ_API).username or "guest"
        perms = {"configure": ".*", "write": ".*", "read": ".*"}
        r = await c.put(f"{RABBITMQ_API}/permissions/{quote(name, safe='')}/{user}", json=perms)
        r.raise_for_status()
    return vhost_url(name)


async def delete_vhost(name: str) -> None:
    async with httpx.AsyncClient(timeout=30) as c:
        await c.delete(f"{RABBITMQ_API}/vhosts/{quote(name, safe='')}")


async def drop_databases(prefix: str) -> None:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(MONGODB_URL)
    try:
        from tests.support import database_names  # not listDatabases on the local FerretDB

        for name in await database_names(client):
            if name.startswith(prefix):
                await client.drop_database(name)
    finally:
        await client.close()


@asynccontextmanager
async def sandbox(label: str = "bench") -> AsyncIterator[Sandbox]:
    run_id = uuid.uuid4().hex[:8]
    vhost = f"{label}-{run_id}"
    amqp_url = await create_vhost(vhost)
    box = Sandbox(run_id=run_id, vhost=vhost, amqp_url=amqp_url, db_prefix=f"{label}{run_id}_")
    try:
        yield box
    finally:
        await delete_vhost(vhost)
        await drop_databases(box.db_prefix)


# --------------------------------------------------------------------------- facts for the record


def _go_module_version(folder: str, module: str) -> str | None:
    try:
        text = (ROOT / "deploy" / folder / "go.mod").read_text()
    except OSError:
        return None
    m = re.search(rf"{re.escape(module)}\s+(v\S+)", text)
    return m.group(1) if m else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _pkg(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


async def machine_info() -> dict[str, Any]:
    """The machine and the servers' versions, stored with every result."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "packages": {
            p: _pkg(p)
            for p in ("aio-pika", "aiormq", "faststream", "pymongo", "pydantic", "fastapi", "uvicorn")
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            overview = (await c.get(f"{RABBITMQ_API}/overview")).json()
        info["rabbitmq"] = overview.get("rabbitmq_version")
        info["erlang"] = overview.get("erlang_version")
    except Exception as exc:
        info["rabbitmq"] = f"unknown ({exc})"
    client: AsyncMongoClient[Doc] = AsyncMongoClient(MONGODB_URL, serverSelectionTimeoutMS=3000)
    try:
        build = await client.admin.command("buildInfo")
        reported = build.get("ferretdbVersion")
        info["mongodb_wire"] = build.get("version")
        info["ferretdb"] = (
            reported if reported and reported != "unknown" else _go_module_version("ferretdb", "FerretDB")
        )
    except Exception as exc:
        info["ferretdb"] = f"unknown ({exc})"
    finally:
        await client.close()
    try:
        async with httpx.AsyncClient(timeout=5) as c:
            version = (await c.get(f"{MAILPIT_API}/info")).json().get("Version")
        info["mailpit"] = (
            version if version and version != "dev" else _go_module_version("mailpit", "mailpit")
        )
    except Exception as exc:
        info["mailpit"] = f"unknown ({exc})"
    return info


def rss_mib(pid: int) -> float | None:
    """Resident memory of a process, from /proc (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


async def settle(seconds: float = 0.5) -> None:
    """Give the servers a moment between parts (queues flushed, fsyncs done)."""
    await asyncio.sleep(seconds)


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def server_pids() -> dict[str, int]:
    """The local servers' processes, found by their command lines."""
    mongo_port = f":{urlsplit(MONGODB_URL).port or 27017}"
    wanted = {"ferretdb": ("ferretdb", mongo_port), "rabbitmq": ("beam.smp", ""), "mailpit": ("mailpit", "")}
    found: dict[str, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        for name, (program, needle) in wanted.items():
            if name not in found and program in argv[0].rsplit("/", 1)[-1] and needle in " ".join(argv):
                found[name] = int(proc.name)
    return found


class CpuMeter:
    """CPU seconds each process used between start() and stop(): where a part's time went."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = {**server_pids(), **pids, "bench": os.getpid()}
        self.before: dict[str, float] = {}
        self.started = 0.0

    def start(self) -> CpuMeter:
        self.before = {k: v for k, pid in self.pids.items() if (v := _cpu_seconds(pid)) is not None}
        self.started = time.perf_counter()
        return self

    def stop(self) -> dict[str, float]:
        """Share of one core per process over the interval (2.0 = both cores of this machine)."""
        wall = max(time.perf_counter() - self.started, 1e-9)
        out: dict[str, float] = {}
        for name, pid in self.pids.items():
            now = _cpu_seconds(pid)
            if now is not None and name in self.before:
                out[name] = round((now - self.before[name]) / wall, 2)
        return dict(sorted(out.items(), key=lambda kv: kv[1], reverse=True))
