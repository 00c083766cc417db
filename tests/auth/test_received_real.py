"""Real Received headers of the MTA families, from public mailing-list archives
(tests/auth/data/real_received_headers.yaml names each message): the peer address the writing
MTA recorded, never the HELO text — several of them carry an address literal as HELO."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mxgate.auth.received import parse_received, received_values

DATA = Path(__file__).parent / "data" / "real_received_headers.yaml"
ENTRIES = yaml.safe_load(DATA.read_text(encoding="utf-8"))


def test_the_families_are_covered():
    families = " ".join(e["family"] for e in ENTRIES)
    for name in ("postfix", "exim", "sendmail", "qmail", "exchange", "gmail", "communigate", "domino",
                 "mimecast", "proofpoint", "ironport", "gmx", "ionos", "zmailer", "qpsmtpd"):
        assert name in families, name
    assert len(ENTRIES) >= 35


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{i:02d}-{e['family'].split()[0]}" for i, e in enumerate(ENTRIES)])
def test_real_header_gives_the_recorded_peer(entry):
    [value] = received_values(("Received: " + entry["received"] + "\n").encode())
    hop = parse_received(value)
    assert (str(hop.ip) if hop.ip is not None else None) == entry["peer"], (entry["source"], hop)


def test_an_address_literal_helo_in_real_mail_is_not_the_peer():
    literal_helos = [e for e in ENTRIES if "literal as HELO" in e["family"]]
    assert len(literal_helos) >= 4
    for entry in literal_helos:
        hop = parse_received(received_values(("Received: " + entry["received"] + "\n").encode())[0])
        assert str(hop.ip) == entry["peer"] and hop.from_helo and entry["peer"] not in hop.from_helo
