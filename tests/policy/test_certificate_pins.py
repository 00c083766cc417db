"""Issue 22, point 1: certificate pins in the spellings admins paste.

`sha256:<hex>`, colon-separated hex pairs and the base64 SPKI pin that the openssl pipeline
prints are all accepted and stored in one canonical form (64 lower-case hex digits), which the
CLI, the policy export and attribution use. The pins are computed by the real openssl binary
from a real certificate, not by the code under test."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from mxgate import cli
from mxgate.policy.pins import canonical_pin
from mxgate.server.tls import spki_sha256_of_file

OPENSSL = shutil.which("openssl")


def _openssl(pipeline: str, cert: str) -> str:
    if OPENSSL is None:
        pytest.fail("the openssl binary is needed for this test (apt-get install openssl)")
    return subprocess.run(["sh", "-c", pipeline], input=open(cert, "rb").read(), capture_output=True,
                          check=True).stdout.decode().strip()


SPKI_B64 = "openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
SPKI_COLONS = "openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -c"


@pytest.fixture(scope="module")
def pins(test_ca):
    cert = test_ca["gateway.partner.test"][0]
    b64 = _openssl(SPKI_B64, cert)
    colons = _openssl(SPKI_COLONS, cert).split()[-1]  # "SHA2-256(stdin)= ab:cd:..."
    assert ":" in colons and len(b64) == 44, (colons, b64)
    return {"canonical": spki_sha256_of_file(cert), "b64": b64, "colons": colons, "upper_colons": colons.upper()}


def test_every_spelling_reads_as_the_same_canonical_pin(pins):
    hexpin = pins["canonical"]
    for spelling in (hexpin, hexpin.upper(), f"sha256:{hexpin}", f"SHA256:{hexpin.upper()}", pins["colons"],
                     pins["upper_colons"], f"sha256:{pins['upper_colons']}", pins["b64"], f"sha256/{pins['b64']}",
                     f"sha256//{pins['b64']}", pins["b64"].rstrip("="),
                     base64.urlsafe_b64encode(bytes.fromhex(hexpin)).decode(), f"  {pins['b64']}\n"):
        assert canonical_pin(spelling) == hexpin, spelling


@pytest.mark.parametrize("bad", ["", "abc", "sha256:", "sha1:" + "a" * 40, "a" * 63, "a" * 65, "zz" * 32,
                                 "ab:" * 31 + "a", base64.b64encode(b"\x00" * 20).decode(),  # SHA-1 size
                                 "sha256:" + base64.b64encode(b"\x01" * 33).decode()])
def test_what_is_not_a_sha256_pin_is_refused(bad):
    assert canonical_pin(bad) is None


@pytest.fixture
def run(tmp_path):
    cli._register_all()
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args: str):
        return runner.invoke(cli.app, ["--home", str(home), *args], catch_exceptions=False)

    assert invoke("domain", "new", "contoso.test").exit_code == 0
    return invoke


@pytest.mark.parametrize("form", ["prefixed", "colons", "b64"])
def test_cli_accepts_the_pasted_pin_and_shows_and_exports_the_canonical_form(run, pins, form):
    pasted = {"prefixed": f"sha256:{pins['canonical']}", "colons": pins["upper_colons"], "b64": pins["b64"]}[form]
    r = run("connector", "new", "Partner by certificate", "--sender-domains", "partner.test",
            "--restrict-domains-to-certificate", "--tls-sender-certificate-name", "gateway.partner.test",
            "--tls-sender-certificate-fingerprint", pasted)
    assert r.exit_code == 0, r.output
    shown = json.loads(run("connector", "show", "Partner by certificate", "--json").stdout)
    assert shown["tls_sender_certificate_fingerprints"] == [pins["canonical"]]
    exported = run("policy", "export").stdout
    assert f'tls_sender_certificate_fingerprints = ["{pins["canonical"]}"]' in exported
    assert pasted not in exported or pasted == pins["canonical"]


def test_the_same_pin_pasted_twice_in_two_spellings_is_kept_once(run, pins):
    r = run("connector", "new", "P", "--sender-domains", "partner.test", "--restrict-domains-to-certificate",
            "--tls-sender-certificate-name", "gateway.partner.test",
            "--tls-sender-certificate-fingerprint", pins["b64"], "--tls-sender-certificate-fingerprint", pins["colons"])
    assert r.exit_code == 0, r.output
    shown = json.loads(run("connector", "show", "P", "--json").stdout)
    assert shown["tls_sender_certificate_fingerprints"] == [pins["canonical"]]


def test_cli_refuses_a_malformed_pin_with_the_rule_named(run):
    r = run("connector", "new", "P", "--sender-domains", "partner.test", "--restrict-domains-to-certificate",
            "--tls-sender-certificate-name", "gateway.partner.test", "--tls-sender-certificate-fingerprint", "sha256:abc")
    assert r.exit_code == 2 and "invalid-fingerprint" in r.output, r.output


@pytest.mark.parametrize("digest", [
    bytes.fromhex("ffff") + bytes(range(30)),  # base64 "//8A…": a prefix's slashes run into it
    bytes.fromhex("fff7b5b27f102c4f6257b4957dc8c388d385492593fb3878e04f4a629c0b7c84"),  # "//e1…", seen in CI
    bytes.fromhex("fc") + bytes(range(31)),  # "/AAB…": one leading slash
    base64.b64decode("sha256" + "A" * 37 + "="),  # a base64 digest that begins with the letters sha256
], ids=["slash-slash", "seen-in-ci", "one-slash", "sha256-letters"])
def test_a_base64_pin_beginning_with_slashes_or_sha256_reads_right_with_every_prefix(digest):
    """The random test key above once gave a digest whose base64 began with "//": "sha256/" + "//e1…"
    was read as "sha256//" + "/e1…" and refused. Every prefix reading is tried; only one gives 32 bytes."""
    b64 = base64.b64encode(digest).decode()
    want = digest.hex()
    for spelling in (b64, f"sha256/{b64}", f"sha256//{b64}", f"SHA256:{b64}", f"sha-256={b64}", b64.rstrip("=")):
        assert canonical_pin(spelling) == want, spelling
