"""The one asyncio load client used for every peer in every scenario.

Owns: the SMTP conversation from the sender's side — binding a source address, STARTTLS,
pipelined MAIL/RCPT/DATA, per-message latency — in three shapes: persistent sessions that send a
fixed number of messages, a bypass flood (new connection per attempt), and idle sessions held
open. Every load is bounded by a count AND a deadline and stops by itself; only loopback hosts.
Each message carries `X-Bench-Seq: <run>-<n>` so the harness can match acknowledgements with
what lands on disk. Must not know: which server it talks to, or how results are judged.
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

BODY_LINE = b"x" * 76 + b"\r\n"  # never starts with ".", so no dot-stuffing is needed


def run(coro):
    """Run one load to completion; on uvloop when installed, so the client is never the ceiling
    (it is the same client, on the same loop, for every peer)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def client_loop() -> str:
    from importlib.util import find_spec

    return "uvloop" if find_spec("uvloop") else "asyncio"


def _loopback(host: str) -> str:
    if not (host.startswith("127.") or host == "::1"):
        raise ValueError(f"the benchmark only targets loopback, not {host!r}")
    return host


def make_message(seq: str, size: int, sender: str, rcpt: str) -> bytes:
    """A plain message of about `size` bytes whose first header names its sequence number."""
    head = (f"X-Bench-Seq: {seq}\r\nFrom: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: bench {seq}\r\n"
            f"Message-ID: <{seq}@bench.fabrikam.test>\r\nDate: Fri, 27 Nov 2026 12:00:00 +0000\r\n\r\n").encode()
    lines = max(1, (size - len(head)) // len(BODY_LINE))
    return head + BODY_LINE * lines


@dataclass
class LoadResult:
    attempts: int = 0
    acked: list[str] = field(default_factory=list)  # sequence numbers answered 250 after DATA
    refused: int = 0  # bypass attempts refused as expected
    refused_at: Counter = field(default_factory=Counter)  # stage → count
    errors: Counter = field(default_factory=Counter)  # what went wrong → count
    latencies: list[float] = field(default_factory=list)  # seconds, per message / attempt
    elapsed: float = 0.0
    timed_out: bool = False

    def rate(self, n: int | None = None) -> float:
        n = len(self.acked) + self.refused if n is None else n
        return n / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(round(p / 100 * (len(data) - 1))))]


class SmtpError(Exception):
    def __init__(self, stage: str, code: int):
        super().__init__(f"{stage}: {code}")
        self.stage, self.code = stage, code


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed by server")
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3])


async def _open(host: str, port: int, source: str | None):
    return await asyncio.open_connection(_loopback(host), port, local_addr=(source, 0) if source else None,
                                         limit=1 << 16)


def client_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl._create_unverified_context()
    ctx.check_hostname = False
    return ctx


async def persistent_load(host: str, port: int, *, sessions: int, count: int, size: int, source: str | None,
                          run_id: str, sender: str, rcpt: str, tls: ssl.SSLContext | None, deadline: float,
                          message: Callable[[str], bytes] | None = None) -> LoadResult:
    """`sessions` connections (STARTTLS once each) share `count` messages; stops at `deadline` s."""
    res = LoadResult()
    numbers = iter(range(count))
    build = message or (lambda seq: make_message(seq, size, sender, rcpt))
    envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode()

    async def session() -> None:
        reader, writer = await _open(host, port, source)
        try:
            if await _reply(reader) != 220:
                raise SmtpError("greeting", 0)
            writer.write(b"EHLO bench.fabrikam.test\r\n")
            await _reply(reader)
            if tls is not None:
                writer.write(b"STARTTLS\r\n")
                if (code := await _reply(reader)) != 220:
                    raise SmtpError("starttls", code)
                await writer.start_tls(tls, server_hostname="mx.contoso.test")
                writer.write(b"EHLO bench.fabrikam.test\r\n")
                await _reply(reader)
            for n in numbers:  # shared iterator: sessions take numbers until none is left
                seq = f"{run_id}-{n}"
                data = build(seq)
                res.attempts += 1
                t0 = time.perf_counter()
                writer.write(envelope)  # RFC 2920: MAIL, RCPT and DATA in one group
                codes = [await _reply(reader) for _ in range(3)]
                if codes != [250, 250, 354]:
                    res.errors[f"envelope {codes}"] += 1
                    if codes[2] == 354:
                        writer.write(b".\r\n")
                        await _reply(reader)
                    writer.write(b"RSET\r\n")
                    await _reply(reader)
                    continue
                writer.write(data + b".\r\n")
                code = await _reply(reader)
                if code == 250:
                    res.acked.append(seq)
                    res.latencies.append(time.perf_counter() - t0)
                else:
                    res.errors[f"data {code}"] += 1
            writer.write(b"QUIT\r\n")
            await _reply(reader)
        finally:
            writer.close()

    await _run(res, [session() for _ in range(sessions)], deadline)
    return res


async def bypass_flood(host: str, port: int, *, concurrency: int, count: int, sources: list[str], deadline: float,
                       sender: str = "spoof@fabrikam.test", rcpt: str = "alice@contoso.test") -> LoadResult:
    """New connection per attempt: EHLO, MAIL, RCPT; an attempt counts when refused with 5xx."""
    res = LoadResult()
    numbers = iter(range(count))
    source_cycle = itertools.cycle(sources)
    envelope = f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\n".encode()

    async def attempt() -> None:
        t0 = time.perf_counter()
        reader, writer = await _open(host, port, next(source_cycle))
        res.attempts += 1
        try:
            greeting = await _reply(reader)
            if greeting >= 500:
                stage = "connect"
            else:
                writer.write(b"EHLO attacker.test\r\n")
                await _reply(reader)
                writer.write(envelope)
                mail, rcpt_code = await _reply(reader), await _reply(reader)
                stage = "mail" if mail >= 500 else "rcpt" if rcpt_code >= 500 else ""
            if stage:
                res.refused += 1
                res.refused_at[stage] += 1
                res.latencies.append(time.perf_counter() - t0)
            else:
                res.errors["not refused"] += 1
            writer.write(b"QUIT\r\n")
            try:
                await _reply(reader)
                await reader.read()  # let the server close first: TIME_WAIT stays on its side
            except (ConnectionError, OSError):
                pass
        finally:
            writer.close()

    async def worker() -> None:
        for _ in numbers:
            try:
                await attempt()
            except (ConnectionError, OSError) as exc:
                res.errors[type(exc).__name__] += 1

    await _run(res, [worker() for _ in range(concurrency)], deadline)
    return res


async def idle_sessions(host: str, port: int, *, count: int, sources: list[str], deadline: float,
                        on_held: Callable[[], None] | None = None, concurrency: int = 256) -> LoadResult:
    """Open `count` sessions (greeting read, then silence), call `on_held`, prove each is alive with NOOP."""
    res = LoadResult()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    gate = asyncio.Semaphore(concurrency)

    async def open_one(i: int) -> None:
        async with gate:
            try:
                reader, writer = await _open(host, port, sources[i % len(sources)])
                res.attempts += 1
                if await _reply(reader) == 220:
                    conns.append((reader, writer))
                else:
                    res.errors["greeting refused"] += 1
                    writer.close()
            except (ConnectionError, OSError) as exc:
                res.errors[type(exc).__name__] += 1

    async def check(reader, writer) -> None:
        async with gate:
            try:
                writer.write(b"NOOP\r\n")
                if await _reply(reader) == 250:
                    res.refused += 1  # here: sessions proven alive after the hold
                else:
                    res.errors["noop refused"] += 1
            except (ConnectionError, OSError) as exc:
                res.errors[f"dropped {type(exc).__name__}"] += 1

    async def body() -> None:
        await asyncio.gather(*(open_one(i) for i in range(count)))
        if on_held:
            await asyncio.to_thread(on_held)
        await asyncio.gather(*(check(r, w) for r, w in conns))

    try:
        await _run(res, [body()], deadline)
    finally:
        for _, writer in conns:
            writer.close()
    return res


async def _run(res: LoadResult, coros: list, deadline: float) -> None:
    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(c) for c in coros]
    done, pending = await asyncio.wait(tasks, timeout=deadline)
    res.elapsed = time.perf_counter() - t0
    if pending:
        res.timed_out = True
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for t in done:
        if not t.cancelled() and t.exception() is not None:
            exc = t.exception()
            res.errors[f"session {type(exc).__name__}: {exc}"[:80]] += 1
