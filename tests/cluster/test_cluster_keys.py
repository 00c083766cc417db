"""Issue 18: keys and sessions shared by nodes on the test PostgreSQL. A bounce to an SRS address
node A issued is accepted by node B (also across an SRS rotation, inside its overlap); a DKIM key
rotated through A's CLI is the one B signs with; logging out on A ends the session on B; key
export files are 0600 and nothing prints key material."""

from __future__ import annotations

import json
import os
import re
import stat
import time

import httpx
import pytest

from clusterkit import mxgate
from rig import GATEWAY, RawSMTP, free_port, wait_until
from mxgate.auth.dkim import verify_dkim
from mxgate.auth.dkim_sign import DkimSigner
from mxgate.delivery import srs
from mxgate.store.keys import KeyRing

POLICY = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"
[[accepted_domain]]
name = "contoso.test"
[[mailbox]]
address = "alice@contoso.test"
[[inbound_connector]]
name = "Third-party filter service"
type = "partner"
sender_domains = ["*"]
sender_ip_addresses = ["127.0.0.10"]
restrict_domains_to_ip_addresses = true
"""
MESSAGE = (b"From: alice@contoso.test\r\nTo: carol@external.test\r\nSubject: hi\r\n"
           b"Date: Tue, 01 Dec 2026 12:00:00 +0000\r\nMessage-ID: <k1@contoso.test>\r\n\r\nhello\r\n")


def rcpt_code(port: int, rcpt: str) -> int:
    """A bounce (MAIL FROM:<>) from the filter service to `rcpt`: the RCPT reply code."""
    with RawSMTP("127.0.0.1", port, GATEWAY) as c:
        c.greeting(); c.cmd("EHLO gw.contoso.test"); c.starttls(); c.cmd("EHLO gw.contoso.test")
        assert c.cmd("MAIL FROM:<>")[0] == 250
        code, _ = c.cmd(f"RCPT TO:<{rcpt}>")
        c.cmd("QUIT")
        return code


@pytest.fixture
def two_nodes(node_factory, pg_url, monkeypatch):
    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    a = node_factory(POLICY, node={"name": "mbx-a", "key_refresh": 0.2})
    b = node_factory(None, node={"name": "mbx-b", "key_refresh": 0.2})
    return a, b


def test_a_bounce_to_an_srs_address_issued_by_node_a_is_accepted_by_node_b(two_nodes, pg_url):
    a, b = two_nodes
    # What node A's forwarding does (delivery/internal.py): the newest secret of its key ring.
    issued = srs.forward("organizer@fabrikam.test", "contoso.test", a.node.keyring.srs_secrets()[0], time.time()).address
    assert issued.startswith("SRS0=")
    assert rcpt_code(b.port(), issued) == 250
    # forged (another secret): unknown at both nodes
    forged = srs.forward("organizer@fabrikam.test", "contoso.test", b"not the cluster's secret", time.time()).address
    assert rcpt_code(b.port(), forged) == 550 and rcpt_code(a.port(), forged) == 550

    # rotated on B through the CLI: A issues with the new secret within key_refresh; the address A
    # issued before still reverses on both (the old secret stays valid for its overlap).
    r = mxgate("keys", "rotate", "srs", env={"MXGATE_STORE_URL": pg_url})
    assert r.returncode == 0, r.stderr
    assert "serial 2" in r.stdout
    assert wait_until(lambda: len(a.node.keyring.srs_secrets()) == 2, timeout=5)
    new = srs.forward("organizer@fabrikam.test", "contoso.test", a.node.keyring.srs_secrets()[0], time.time()).address
    assert new != issued
    for node in (a, b):
        assert rcpt_code(node.port(), new) == 250
        assert rcpt_code(node.port(), issued) == 250


def test_a_dkim_key_rotated_on_node_a_is_used_by_node_b(two_nodes, pg_url, dns):
    a, b = two_nodes
    env = {"MXGATE_STORE_URL": pg_url}
    signer_b = DkimSigner(b.home.keys, keyring=b.node.keyring)
    ours = lambda d: d == "contoso.test"  # noqa: E731
    first = signer_b.sign(MESSAGE, "alice@contoso.test", ours)
    assert b"s=mxgate;" in first.replace(b" ", b"")

    r = mxgate("keys", "rotate", "dkim", "--domain", "contoso.test", env=env)  # on A's store, A's CLI
    assert r.returncode == 0, r.stderr
    assert "selector mxgate2" in r.stdout and "mxgate2._domainkey.contoso.test" in r.stdout

    def b_signs_with_new() -> bool:
        return b"s=mxgate2;" in signer_b.sign(MESSAGE, "alice@contoso.test", ours).replace(b" ", b"")

    assert wait_until(b_signs_with_new, timeout=5)  # within [node] key_refresh
    # Publish what `mxgate keys dns` lists (the new key and the old one in its overlap): both
    # signatures verify, so mail signed before the rotation still passes.
    listed = mxgate("keys", "dns", "dkim", "--domain", "contoso.test", env=env)
    assert listed.returncode == 0, listed.stderr
    records = re.findall(r'(\S+)\._domainkey\.contoso\.test\. IN TXT \( (.+) \)', listed.stdout)
    assert {sel for sel, _ in records} == {"mxgate", "mxgate2"}
    for sel, chunks in records:
        dns.add(f"{sel}._domainkey.contoso.test", "TXT", "".join(re.findall(r'"([^"]*)"', chunks)))
    from mxgate.auth.dns import dnsfunc_for, make_resolver
    dnsfunc = dnsfunc_for(make_resolver([dns.address], 2.0), 2.0)
    for signed in (first, signer_b.sign(MESSAGE, "alice@contoso.test", ours)):
        assert [res.result for res in verify_dkim(signed, dnsfunc)] == ["pass"]


def test_key_export_is_0600_and_import_gives_another_store_the_same_keys(two_nodes, pg_url, pg_cluster, tmp_path, caplog):
    a, _b = two_nodes
    secret = a.node.keyring.srs_secrets()[0]
    path = tmp_path / "keys.json"
    r = mxgate("keys", "export", str(path), env={"MXGATE_STORE_URL": pg_url})
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    other = pg_cluster.create_database()
    r2 = mxgate("keys", "import", str(path), env={"MXGATE_STORE_URL": other})
    assert r2.returncode == 0 and "imported" in r2.stdout, r2.stderr
    from mxgate.store.db import open_engine
    engine = open_engine(other)
    try:
        assert KeyRing(engine).srs_secrets()[0] == secret
    finally:
        engine.dispose()
    listing = mxgate("keys", "list", "--json", env={"MXGATE_STORE_URL": pg_url})
    assert listing.returncode == 0
    assert {k["kind"] for k in json.loads(listing.stdout)} >= {"srs"}
    # nothing printed or logged carries the material
    hexed, b64 = secret.hex(), __import__("base64").b64encode(secret).decode()
    for text in (r.stdout, r.stderr, r2.stdout, r2.stderr, listing.stdout, caplog.text):
        assert hexed not in text and b64 not in text
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r3 = mxgate("keys", "import", str(bad), env={"MXGATE_STORE_URL": other})
    assert r3.returncode != 0 and "not an `mxgate keys export` file" in r3.stderr and "Traceback" not in r3.stderr


def test_logout_on_node_a_ends_the_session_on_node_b(node_factory, pg_url, monkeypatch):
    from mxgate.admin import auth

    monkeypatch.setenv("MXGATE_STORE_URL", pg_url)
    password = "correct horse battery staple"
    a = node_factory(POLICY, node={"name": "adm-a"}, roles={"admin": True},
                     admin={"listen": f"127.0.0.1:{free_port()}"})
    b = node_factory(None, node={"name": "adm-b"}, roles={"admin": True},
                     admin={"listen": f"127.0.0.1:{free_port()}"})
    auth.set_password(a.node.engine, "admin", password)
    url_a, url_b = ("http://" + n.node.settings.admin.listen for n in (a, b))
    csrf = lambda html: re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # noqa: E731
    c = httpx.Client(base_url=url_a, timeout=10)
    r = c.post("/login", data={"csrf_token": csrf(c.get("/login").text), "username": "admin", "password": password,
                               "next": "/"})
    assert r.status_code == 303, r.text
    on_b = httpx.Client(base_url=url_b, cookies={"mxgate_session": c.cookies.get("mxgate_session")}, timeout=10)
    assert on_b.get("/").status_code == 200
    assert c.post("/logout", data={"csrf_token": csrf(c.get("/").text)}).status_code == 303
    assert on_b.get("/").status_code == 303 and on_b.get("/api/v1/domains").status_code == 401
