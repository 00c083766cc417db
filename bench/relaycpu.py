"""The gateway's relay client alone: CPU per message of `queue.relay.relay()` into a real mailbox node.

`python3 bench/relaycpu.py [--count 600] [--concurrency 20] [--profile]`, with PYTHONPATH at the
tree to measure (so two trees can be compared pair by pair, as for bench/authcpu.py).
Starts the P3 mailbox server (bench/endtoend.py's policy, the bench DNS server, STARTTLS, the
gateway's source address) in its own process, then relays the P3 message `count` times,
`concurrency` at once, through the relay's session pool on uvloop (as the gateway does), and
prints the client process's CPU per message (`time.process_time()`), which is the relay's share
of the gateway's CPU: the mailbox's CPU is in another process. Every message must be delivered.
Must not know: the other scenarios.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import endtoend  # noqa: E402
import peers  # noqa: E402
from scenarios import SENDER  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=600)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of the relays")
    args = ap.parse_args()
    from mxgate.auth.dkim import generate_dkim_key
    from mxgate.config.node import NodeSettings
    from mxgate.queue.relay import POOL, RelaySettings, client_context, relay

    root = Path(tempfile.mkdtemp(prefix="mxgate-relaycpu-"))
    certs = peers.certificates(root / "certs")
    dns = peers.DnsServer(root / "dns", records=dict(peers.SENDER_RECORDS)).start()
    key_pem, key_txt = generate_dkim_key()
    dns.publish(f"{endtoend.DKIM_SELECTOR}._domainkey.fabrikam.test", "TXT", key_txt)
    routable = [n for n in NodeSettings().mailbox.non_routable if n != "127.0.0.0/8"]
    import json

    mailbox = peers.MxgatePeer("mxgate-mailbox", root / "mailbox", dns=dns.address, policy=endtoend.MAILBOX_POLICY,
                               cert=str(certs.server_cert), key=str(certs.server_key),
                               mailbox_toml=f"non_routable = {json.dumps(routable)}")
    template = endtoend.signed_template(key_pem, 2048)
    try:
        mailbox.start()
        settings = RelaySettings((f"127.0.0.1:{mailbox.port}",), client_context(str(certs.ca_cert)),
                                 source_address=peers.GATEWAY, helo="gw.contoso.test", idle_sessions=args.concurrency)

        async def run(n: int) -> list:
            slots = asyncio.Semaphore(args.concurrency)

            async def one(i: int):
                async with slots:
                    return await relay(settings, SENDER, [peers.RECIPIENT], f"X-Bench-Seq: r{i}\r\n".encode() + template)

            return await asyncio.gather(*(one(i) for i in range(n)))

        async def measured():
            await run(args.concurrency * 2)  # sessions opened and pooled, as in a gateway under way
            prof = cProfile.Profile() if args.profile else None
            c0, t0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            results = await run(args.count)
            if prof:
                prof.disable()
            c1, t1 = time.process_time(), time.perf_counter()
            POOL.close_for_this_loop()
            return results, c1 - c0, t1 - t0, prof

        import uvloop

        results, cpu, wall, prof = uvloop.run(measured())
        states = {o.state for r in results for o in r.outcomes}
        print(f"relay CPU {cpu / args.count * 1e6:.0f} µs/msg, {args.count / wall:.0f} msg/s, outcomes {sorted(states)}")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0 if states == {"delivered"} else 1
    finally:
        mailbox.stop()
        dns.stop()


if __name__ == "__main__":
    sys.exit(main())
