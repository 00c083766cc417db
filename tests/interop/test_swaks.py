"""Issue 3 must-show 4: swaks (Debian package) as a real client against the mailbox server."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from rig import ATTACKER, GATEWAY, maildir_messages

SWAKS = shutil.which("swaks")


def swaks(port: int, source: str, *extra: str) -> subprocess.CompletedProcess:
    if SWAKS is None:
        pytest.fail("swaks is not installed: run scripts/install-system-deps.sh")
    return subprocess.run([SWAKS, "--server", f"127.0.0.1:{port}", "--local-interface", source,
                           "--from", "sender@fabrikam.test", "--to", "alice@contoso.test", "--helo", "swaks.test",
                           "--header", "Subject: swaks interop", *extra],
                          capture_output=True, text=True, timeout=60)


def test_swaks_refused_from_attacker(node_factory):
    n = node_factory()
    r = swaks(n.port(), ATTACKER, "--tls")
    assert r.returncode != 0
    assert "550 5.7.51 TenantInboundAttribution" in r.stdout
    assert maildir_messages(n.home, "alice@contoso.test") == []


def test_swaks_delivered_from_gateway_with_tls(node_factory):
    n = node_factory()
    r = swaks(n.port(), GATEWAY, "--tls")
    assert r.returncode == 0, r.stdout
    assert "TLS started" in r.stdout and "250 2.0.0 OK: delivered" in r.stdout
    [stored] = maildir_messages(n.home, "alice@contoso.test")
    assert b"Subject: swaks interop" in stored


def test_swaks_without_tls_from_gateway_gets_530(node_factory):
    n = node_factory()
    r = swaks(n.port(), GATEWAY)
    assert r.returncode != 0 and "530 5.7.0" in r.stdout
