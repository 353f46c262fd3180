"""The web gateway next to the same ASGI app served directly by uvicorn, in one run.

    python bench/web.py [--quick] [--json bench/results/web.json]

Two apps (bench/web_app.py) answer a small JSON body: a raw ASGI app (the serving path alone)
and the same endpoint in FastAPI. Two ways to reach each:
  direct   uvicorn (httptools, uvloop) in its own process, one worker
  gateway  Ferry's gateway (in the control plane) -> one container (process runtime,
           @concurrent(max_inputs=256)) running the same app
Measures, for each, with a load generator in this process (asyncio + uvloop, raw HTTP/1.1
keep-alive connections, a fixed number of requests, loopback only):
  latency     one connection, requests one after another: p50 and p99
  throughput  CONCURRENCY connections at once: requests per second
and prints the gateway's added latency (gateway minus direct) as a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection sending GETs one at a time (responses carry Content-Length)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        start = head.find(b"content-length:")
        length = int(head[start + 15:head.find(b"\r\n", start) if head.find(b"\r\n", start) > 0 else None])
        if len(self.buffer) >= end + 4 + length:
            status = int(self.buffer[9:12])
            del self.buffer[:end + 4 + length]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    async def get(self) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(self.request)
        return await self.waiter


async def connect(port: int, path: str, host: str) -> HttpConnection:
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    _, conn = await asyncio.get_running_loop().create_connection(lambda: HttpConnection(request), "127.0.0.1", port)
    return conn


async def latency(port: int, path: str, host: str, n: int) -> dict[str, float]:
    conn = await connect(port, path, host)
    for _ in range(200):
        assert await conn.get() == 200
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        status = await conn.get()
        samples.append(time.perf_counter() - start)
        assert status == 200
    conn.transport.close()  # type: ignore[union-attr]
    samples.sort()
    return {"p50_ms": samples[len(samples) // 2] * 1000, "p99_ms": samples[int(len(samples) * 0.99)] * 1000}


async def throughput(port: int, path: str, host: str, total: int, concurrency: int) -> float:
    conns = [await connect(port, path, host) for _ in range(concurrency)]
    for conn in conns:
        assert await conn.get() == 200
    per_conn = total // concurrency

    async def drive(conn: HttpConnection) -> None:
        for _ in range(per_conn):
            assert await conn.get() == 200

    start = time.perf_counter()
    await asyncio.gather(*(drive(c) for c in conns))
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.transport.close()  # type: ignore[union-attr]
    return per_conn * concurrency / elapsed


def measure(port: int, path: str, host: str, args: argparse.Namespace) -> dict[str, Any]:
    async def both() -> dict[str, Any]:
        return {"latency": await latency(port, path, host, args.requests),
                "req_per_s": await throughput(port, path, host, args.total, args.concurrency)}

    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(both())
    except ImportError:
        return asyncio.run(both())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_direct(args: argparse.Namespace, app: str) -> dict[str, Any]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"web_app:{app}", "--port", str(port), "--loop", "uvloop",
         "--http", "httptools", "--no-access-log", "--log-level", "warning", "--lifespan", "off"],
        cwd=HERE, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.05)
        return measure(port, "/", "localhost", args)
    finally:
        process.terminate()
        process.wait(10)


def bench_gateway(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-web-"))
    os.environ.update(FERRY_HOME=str(home), FERRY_RUNTIME="process", FERRY_WEB_PORT="0")
    from server_process import start_server

    server = start_server(home)
    os.environ["FERRY_SERVER_URL"] = server["url"]
    try:
        import web_app

        results = {}
        with web_app.app.run(show_logs=False):
            for name, function in (("asgi", web_app.endpoint), ("fastapi", web_app.fastapi_endpoint)):
                url = function.get_web_url()
                port = int(url.rsplit(":", 1)[1])
                host = url.split("//", 1)[1]
                results[name] = measure(port, "/", host, args)
        return results
    finally:
        server["stop"]()


def table(direct: dict[str, Any], gateway: dict[str, Any]) -> str:
    lines = ["| app | served by | p50 | p99 | requests/s |", "| --- | --- | --- | --- | --- |"]
    for app in ("asgi", "fastapi"):
        label = "raw ASGI" if app == "asgi" else "FastAPI"
        for name, r in (("uvicorn directly", direct[app]), ("Ferry gateway -> container", gateway[app])):
            lines.append(f"| {label} | {name} | {r['latency']['p50_ms']:.2f} ms | {r['latency']['p99_ms']:.2f} ms "
                         f"| {r['req_per_s']:,.0f} |")
        added = {k: gateway[app]["latency"][k] - direct[app]["latency"][k] for k in ("p50_ms", "p99_ms")}
        lines.append(f"| {label} | added by the gateway | {added['p50_ms']:+.2f} ms | {added['p99_ms']:+.2f} ms | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests")
    parser.add_argument("--concurrency", type=int, default=32, help="connections for the throughput run")
    parser.add_argument("--json", type=Path, default=None, help="also write raw results here")
    args = parser.parse_args()
    args.requests = 1000 if args.quick else 5000
    args.total = 5000 if args.quick else 30000
    print("running uvicorn directly...", file=sys.stderr)
    direct = {"asgi": bench_direct(args, "asgi"), "fastapi": bench_direct(args, "fastapi_asgi")}
    print("running through the Ferry gateway...", file=sys.stderr)
    gateway = bench_gateway(args)
    print(f"\n{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"{time.strftime('%Y-%m-%d')} · {args.concurrency} connections for requests/s\n")
    print(table(direct, gateway))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"direct": direct, "gateway": gateway}, indent=2))


if __name__ == "__main__":
    main()
