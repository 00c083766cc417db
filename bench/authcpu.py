"""CPU per message of the DKIM/ARC work of each role, in process (robust to a loaded machine).

Owns: a bounded, in-process measurement of what P3 makes each role do with one message — the
gateway verifies the sender's DKIM signature and ARC-seals, the mailbox server verifies the
DKIM signature and the gateway's ARC chain — timed with process CPU time (not wall time), so
figures from a shared machine can be compared in an A/B. DNS answers come from a dict.

    python3 bench/authcpu.py [--count 200] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

import os  # noqa: E402

if not os.environ.get("PYTHONPATH"):  # with PYTHONPATH set, that tree is measured (an A/B's base)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def setup():
    import endtoend
    from mxgate.auth.dkim import generate_dkim_key

    key_pem, key_txt = generate_dkim_key()
    arc_pem, arc_txt = generate_dkim_key()
    records = {"bench._domainkey.fabrikam.test.": key_txt, "mxgate-gw._domainkey.mxgate.test.": arc_txt}

    def dnsfunc(name, timeout=5.0):
        name = name.decode() if isinstance(name, bytes) else name
        value = records.get(name.lower() if name.endswith(".") else name.lower() + ".")
        return value.encode() if value else None

    message = b"X-Bench-Seq: 1\r\n" + endtoend.signed_template(key_pem, 2048)
    return message, arc_pem, dnsfunc


def gateway(message: bytes, arc_pem: bytes, dnsfunc) -> bytes:
    from mxgate.auth.arc import seal_arc
    from mxgate.auth.dkim import verify_dkim

    results = verify_dkim(message, dnsfunc)
    ar = f"gw.mxgate.test; dkim={results[0].result} header.d=fabrikam.test; arc=none"
    return seal_arc(message, "gw.mxgate.test", "mxgate.test", "mxgate-gw", arc_pem, ar) + \
        b"Authentication-Results: " + ar.encode() + b"\r\n" + message


def mailbox(sealed: bytes, dnsfunc) -> tuple:
    from mxgate.auth.arc import validate_arc
    from mxgate.auth.dkim import verify_dkim

    return verify_dkim(sealed, dnsfunc), validate_arc(sealed, dnsfunc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of each role")
    args = ap.parse_args()
    import mxgate

    print(f"tree: {Path(mxgate.__file__).parent.parent}")  # which tree an A/B column measured
    message, arc_pem, dnsfunc = setup()
    sealed = gateway(message, arc_pem, dnsfunc)
    dkim, arc = mailbox(sealed, dnsfunc)
    assert [r.result for r in dkim] == ["pass"] and arc.status == "pass", (dkim, arc)
    for role, call in (("gateway", lambda: gateway(message, arc_pem, dnsfunc)),
                       ("mailbox", lambda: mailbox(sealed, dnsfunc))):
        for _ in range(10):  # warm caches, as a running node's are
            call()
        c0 = time.process_time()
        for _ in range(args.count):
            call()
        print(f"{role}: {(time.process_time() - c0) / args.count * 1e6:.0f} µs CPU per message "
              f"(DKIM/ARC work only, {args.count} messages)")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(min(args.count, 50)):
                call()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
