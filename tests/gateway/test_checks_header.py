"""Issue 20: X-MXGate-Checks and the gateway's Authentication-Results never contradict each other
(an unsigned message is dkim=none in both), checked on what the gateway relays."""

from __future__ import annotations

import re

import pytest
from gwkit import gw_port
from rig import INTERNET, send_message, simple_message, wait_until

from mxgate.auth.dkim import generate_dkim_key, sign_dkim


def _header(message: bytes, name: str) -> str:
    head = message.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n\t", " ").replace("\r\n ", " ")
    found = [line.split(":", 1)[1].strip() for line in head.split("\r\n") if line.lower().startswith(name.lower() + ":")]
    assert found, f"no {name} in {head}"
    return found[0]


def _words(value: str, methods=("spf", "dkim", "dmarc")) -> dict[str, set[str]]:
    return {m: set(re.findall(rf"\b{m}=([a-z]+)", value)) for m in methods}


def _signed(dns, tamper: bool) -> bytes:
    key, txt = generate_dkim_key(1024)
    dns.add("sel._domainkey.fabrikam.test", "TXT", txt)
    msg = simple_message(subject="signed")
    out = sign_dkim(msg, "fabrikam.test", "sel", key) + msg
    return out.replace(b"Hello.", b"Hell0.") if tamper else out


@pytest.mark.parametrize("kind,dkim", [("unsigned", "none"), ("signed", "pass"), ("tampered", "fail")])
def test_checks_header_agrees_with_authentication_results(make_gateway, sink, test_ca, dns, kind, dkim):
    dns.add("fabrikam.test", "TXT", "v=spf1 ip4:192.0.2.1 ~all")  # softfail: not the check's "pass"
    gw = make_gateway(downstream=[sink.address], downstream_ca=test_ca["ca"])
    data = simple_message() if kind == "unsigned" else _signed(dns, tamper=kind == "tampered")
    r = send_message("127.0.0.10", gw_port(gw), source=INTERNET, sender="sender@fabrikam.test",
                     rcpts=["alice@contoso.test"], data=data)
    assert r["end"][0] == 250, r
    assert wait_until(lambda: sink.messages, timeout=10)
    relayed = sink.messages[0]["raw"]  # what the gateway hands to the mailbox server
    checks = _header(relayed, "X-MXGate-Checks")
    results = _header(relayed, "Authentication-Results")
    assert results.startswith("gw.mxgate.test;")
    ours, theirs = _words(checks), _words(results)
    assert ours["dkim"] == theirs["dkim"] == {dkim}, (checks, results)
    assert ours["spf"] == theirs["spf"] == {"softfail"}, (checks, results)
    assert ours["dmarc"] == theirs["dmarc"], (checks, results)
