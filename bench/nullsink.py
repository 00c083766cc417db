"""The null sink peer: stock aiosmtpd whose handler answers 250 and stores nothing.

Owns: the ceiling for a Python asyncio SMTP server on this machine (performance.md P7), with
STARTTLS offered like every other peer. For the harness's accounting it remembers the
X-Bench-Seq of every message it acknowledged and writes them to --record on SIGUSR1/SIGTERM.
Test hooks: --store DIR writes each message into DIR/new (no fsync); --lose-every K skips the
write of every K-th message while still answering 250 (a deliberately lossy server).
Must not know: the harness; it is run as `python bench/nullsink.py --port N ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import ssl

from aiosmtpd.smtp import SMTP

SEQ = re.compile(rb"^X-Bench-Seq: (\S+)\r?$", re.M)


class NullHandler:
    def __init__(self, store: str | None, lose_every: int):
        self.seqs: list[bytes] = []
        self.store = store
        self.lose_every = lose_every
        self.count = 0
        if store:
            os.makedirs(os.path.join(store, "new"), exist_ok=True)

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        content = envelope.original_content or envelope.content or b""
        m = SEQ.search(content[:4096])
        seq = m.group(1) if m else b"-"
        if self.store:
            if not (self.lose_every and self.count % self.lose_every == 0):
                with open(os.path.join(self.store, "new", f"{self.count}.{os.getpid()}"), "wb") as fh:
                    fh.write(content)
        else:
            self.seqs.append(seq)
        return "250 2.0.0 OK"

    def dump(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"\n".join(self.seqs) + (b"\n" if self.seqs else b""))
        os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--store")
    ap.add_argument("--lose-every", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    try:
        import uvloop  # the same loop mxgate uses when the speed extra is installed

        uvloop.install()
    except ImportError:
        pass
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    handler = NullHandler(args.store, args.lose_every)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, handler.dump, args.record)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.test", tls_context=ctx, decode_data=False,
                         data_size_limit=10 * 1024 * 1024, ident="null sink"),
            "127.0.0.1", args.port, backlog=1024, reuse_address=True)
        await stop.wait()
        server.close()
        handler.dump(args.record)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
