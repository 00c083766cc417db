"""A real Postfix configured by `mxgate policy export --format postfix`, on loopback ports."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import rig
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from postfix_rig import PostfixInstance

from mxgate.export.postfix import postfix_config
from mxgate.policy.document import load_toml


def spki_pin(cert_path: str | Path) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    return hashlib.sha256(cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def export_policy(test_ca) -> str:
    """The guide's gateway (IPv4 and ::1) plus a pinned certificate connector."""
    pin = spki_pin(test_ca["dir"] / "gateway.partner.test.pem")
    return rig.GUIDE_POLICY.replace('sender_ip_addresses = ["127.0.0.10"]',
                                    'sender_ip_addresses = ["127.0.0.10", "::1"]') + f"""
[[inbound_connector]]
name = "Partner by certificate"
sender_domains = ["partner.test"]
restrict_domains_to_certificate = true
tls_sender_certificate_name = "gateway.partner.test"
tls_sender_certificate_fingerprints = ["{pin}"]
"""


class ExportedPostfix:
    def __init__(self, policy_text: str, test_ca, **options):
        self.port = rig.free_port()
        self.port6 = rig.free_port("::1")
        self.instance = PostfixInstance()
        self.maildir = self.instance.root / "vmail"
        self.maildir.mkdir()
        shutil.chown(self.maildir, "nobody", "nogroup")
        owner = self.maildir.stat()
        self.files = postfix_config(load_toml(policy_text), listen=(f"127.0.0.1:{self.port}", f"[::1]:{self.port6}"),
                                    maildir_base=str(self.maildir), tls_cert=test_ca["server_cert"],
                                    tls_key=test_ca["server_key"], client_ca=test_ca["ca"],
                                    uid=owner.st_uid, gid=owner.st_gid, **options)
        self.instance.main_cf = self.files["main.cf"]
        self.instance.master_cf = self.files["master.cf"]
        self.instance.tables = {k: v for k, v in self.files.items() if k not in ("main.cf", "master.cf")}
        self.instance.write()

    def start(self) -> "ExportedPostfix":
        self.instance.start(wait_for=[("127.0.0.1", self.port), ("::1", self.port6)])
        return self

    def messages(self, address: str) -> list[bytes]:
        local, _, domain = address.partition("@")
        new = self.maildir / domain / local / "new"
        return [p.read_bytes() for p in sorted(new.iterdir())] if new.exists() else []


@pytest.fixture
def exported_postfix(test_ca):
    started: list[ExportedPostfix] = []

    def make(policy_text: str | None = None, **options) -> ExportedPostfix:
        pf = ExportedPostfix(policy_text or export_policy(test_ca), test_ca, **options)
        started.append(pf)
        return pf

    yield make
    for pf in started:
        pf.instance.stop()
