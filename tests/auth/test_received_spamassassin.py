"""SpamAssassin's Received-parser regression data (tests/auth/data/spamassassin_rcvd_parser.tsv,
from apache/spamassassin t/rcvd_parser.t): every relay sample must give the peer address
SpamAssassin expects. Where mxgate differs, `DIFFERENCES` names the sample and why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mxgate.auth.received import parse_received

DATA = Path(__file__).parent / "data" / "spamassassin_rcvd_parser.tsv"

# Samples SpamAssassin does not treat as relays (expected "") on which mxgate still reads
# the address the writing MTA recorded. Keyed by a unique piece of the header.
DIFFERENCES = {
    "(fetchmail-6.2.4) for zzzzz@localhost":
        "fetchmail records the mailbox server it fetched from; SpamAssassin drops such hops, "
        "mxgate keeps the recorded address (127.0.0.1: non-routable, never a sender)",
    "(fetchmail-6.2.4) for zzzz@localhost":
        "fetchmail records the mailbox server it fetched from (127.0.0.1, non-routable)",
    "with POP3 (fetchmail-5.9.13)":
        "fetchmail records the POP3 server it fetched from; SpamAssassin drops fetch hops. For "
        "enhanced filtering a fetch is not a hop a trusted gateway writes, so it never matters",
    "with qmail-scanner-1.24":
        "qmail-scanner's handover record names the client address; SpamAssassin skips the "
        "scanner line because the qmail line above it carries the same address",
}


def _samples() -> list[tuple[str, str | None]]:
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        header, expected = line.split("\t")
        match = re.search(r"\bip=(\S*)", expected)
        rows.append((header, match.group(1) if match else None))
    return rows


SAMPLES = _samples()


def test_the_data_is_all_there():
    assert len(SAMPLES) == 143  # t/rcvd_parser.t plans 145 tests: 143 samples + 2 setup checks
    assert sum(1 for _, ip in SAMPLES if ip) == 109


@pytest.mark.parametrize("header,expected", SAMPLES, ids=[f"sa{i:03d}" for i in range(len(SAMPLES))])
def test_peer_address_matches_spamassassin(header, expected):
    hop = parse_received(header)
    got = str(hop.ip) if hop.ip is not None else None
    reason = next((why for key, why in DIFFERENCES.items() if key in header), None)
    if reason is not None:
        assert expected is None and got is not None, "a listed difference no longer differs: drop it"
        return
    assert got == expected, hop


def test_every_listed_difference_names_a_sample():
    for key in DIFFERENCES:
        assert sum(1 for header, _ in SAMPLES if key in header) == 1, key


def test_a_helo_literal_is_never_taken_for_the_peer():
    """In every sample where SpamAssassin records a HELO address literal that differs from the
    peer, mxgate reads the peer."""
    checked = 0
    for header, expected in SAMPLES:
        if not expected:
            continue
        helo = re.search(r"HELO \[?([0-9.]+)|helo=\[?([0-9.]+)|^from \[([0-9.]+)\] \(", header)
        literal = helo and next(g for g in helo.groups() if g)
        if literal and literal != expected:
            checked += 1
            assert str(parse_received(header).ip) == expected
    assert checked >= 4
