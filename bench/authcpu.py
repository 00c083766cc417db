"""CPU per message of the DKIM/ARC work of each role, in process (robust to a loaded machine).

Owns: a bounded, in-process measurement of what P3 makes each role do with one message — the
gateway verifies the sender's DKIM signature and ARC-seals, the mailbox server verifies the
DKIM signature and the gateway's ARC chain — timed with process CPU time (not wall time), so
figures from a shared machine can be compared in an A/B. DNS answers come from a dict.
Every message timed is a new one, signed and sealed on its own (its own Message-ID, so its own
DKIM-Signature and ARC set), as on a real node: parse caches keyed by a message or a signature
never hit across messages here (they did when every message was one template's copy).

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


def setup(count: int = 1):
    """(`count` distinct signed messages, the ARC key, dnsfunc)."""
    import endtoend
    from mxgate.auth.dkim import generate_dkim_key

    key_pem, key_txt = generate_dkim_key()
    arc_pem, arc_txt = generate_dkim_key()
    records = {"bench._domainkey.fabrikam.test.": key_txt, "mxgate-gw._domainkey.mxgate.test.": arc_txt}

    def dnsfunc(name, timeout=5.0):
        name = name.decode() if isinstance(name, bytes) else name
        value = records.get(name.lower() if name.endswith(".") else name.lower() + ".")
        return value.encode() if value else None

    messages = [b"X-Bench-Seq: %d\r\n" % i + _signed(endtoend, key_pem, i) for i in range(count)]
    return messages, arc_pem, dnsfunc


def _signed(endtoend, key_pem: bytes, seq: int) -> bytes:
    """endtoend.signed_template's message with its own Message-ID and Subject, signed alone."""
    from mxgate.auth.dkim import sign_dkim

    body = endtoend.loadclient.make_message(str(seq), 2048, endtoend.SENDER, endtoend.peers.RECIPIENT)
    body = body.split(b"\r\n", 1)[1]
    return sign_dkim(body, "fabrikam.test", endtoend.DKIM_SELECTOR, key_pem,
                     include_headers=["From", "To", "Subject", "Date", "Message-ID"]) + body


def gateway(message: bytes, arc_pem: bytes, dnsfunc) -> bytes:
    from mxgate.auth.arc import seal_arc
    from mxgate.auth.dkim import verify_dkim

    results = verify_dkim(message, dnsfunc)
    ar = f"gw.mxgate.test; dkim={results[0].result} header.d=fabrikam.test; arc=none"
    # The clauses as server/gateway.py passes them (authres does not re-parse our own value).
    return seal_arc(message, "gw.mxgate.test", "mxgate.test", "mxgate-gw", arc_pem, ar, clauses=ar.split("; ")) + \
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
    warm = 10
    messages, arc_pem, dnsfunc = setup(args.count + warm)
    sealed = [gateway(m, arc_pem, dnsfunc) for m in messages]
    for one in sealed:
        dkim, arc = mailbox(one, dnsfunc)
        assert [r.result for r in dkim] == ["pass"] and arc.status == "pass", (dkim, arc)
    for role, call, inputs in (("gateway", lambda m: gateway(m, arc_pem, dnsfunc), messages),
                               ("mailbox", lambda m: mailbox(m, dnsfunc), sealed)):
        for one in inputs[:warm]:  # warm the key caches, as a running node's are
            call(one)
        timed = inputs[warm:]
        c0 = time.process_time()
        for one in timed:
            call(one)
        print(f"{role}: {(time.process_time() - c0) / args.count * 1e6:.0f} µs CPU per message "
              f"(DKIM/ARC work only, {args.count} messages)")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for one in timed[:50]:  # seen once already: per-message caches may hit here
                call(one)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return 0


if __name__ == "__main__":
    sys.exit(main())
