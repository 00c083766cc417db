"""The whole organisation on loopback: DNS, an Internet MX sink, the gateway, the mailbox server
with submission. MX records in the test DNS point at the sink (port 25 on its own loopback address).
"""

from __future__ import annotations

import pytest

import rig
from rig import GATEWAY, MxSink, free_port

from mxgate.server.tls import issue_certificate

FAST_QUEUE = {"retry_first": 0.3, "retry_max_backoff": 1.0, "host_backoff": 0.2, "queue_scan_interval": 0.1,
              "relay_connect_timeout": 2.0, "relay_timeout": 10.0}
PASSWORD = "correct horse battery"


def flow_policy(gw_port: int) -> str:
    return rig.GUIDE_POLICY.replace('''[[mailbox]]
address = "alice@contoso.test"
aliases = ["alice.smith@contoso.test"]''', '''[[mailbox]]
address = "alice@contoso.test"
aliases = ["alice.smith@contoso.test"]
forward_to = ["bob@contoso.test", "carol@external.test"]
keep_copy = true''') + f'''
[[mailbox]]
address = "dave@contoso.test"
send_as = ["helpdesk@contoso.test"]

[[mailbox]]
address = "team@contoso.test"
members = ["bob@contoso.test", "dave@contoso.test"]

[[inbound_connector]]
name = "Printers"
type = "on_premises"
sender_ip_addresses = ["127.0.0.30"]
require_tls = false

[[outbound_connector]]
name = "Outbound via gateway"
recipient_domains = ["*"]
smart_hosts = ["{GATEWAY}:{gw_port}"]
tls_settings = "certificate_validation"
'''


@pytest.fixture
def mx_sink(test_ca, dns):
    s = MxSink(test_ca["server_cert"], test_ca["server_key"])
    dns.add("external.test", "MX", (10, "mx.external.test"))
    dns.add("mx.external.test", "A", s.host)
    yield s
    s.close()


class Org:
    def __init__(self, mailbox, gateway, sink, dns, policy: str):
        self.mailbox, self.gateway, self.sink, self.dns = mailbox, gateway, sink, dns
        self.policy = policy  # the TOML both nodes started with

    @property
    def home(self):
        return self.mailbox.home


@pytest.fixture
def org(node_factory, dns, mx_sink, tmp_path):
    """Mailbox server (+ submission) behind a gateway that relays outbound mail by MX to the sink."""
    return start_org(node_factory, dns, mx_sink, tmp_path)


@pytest.fixture
def make_org(node_factory, dns, mx_sink, tmp_path):
    """make_org(edit=..., admin=False) -> Org: the organisation with an edited policy or the admin centre."""
    return lambda **kw: start_org(node_factory, dns, mx_sink, tmp_path, **kw)


def start_org(node_factory, dns, mx_sink, tmp_path, *, edit=lambda policy: policy, admin: bool = False) -> Org:
    """The organisation; `edit` changes the policy both nodes start with, `admin` adds the admin
    centre to the mailbox node (its URL in `org.mailbox.admin_url`)."""
    gw_port = free_port(GATEWAY)
    policy = edit(flow_policy(gw_port))
    dns_settings = {"servers": [dns.address], "timeout": 2.0}
    extra = {"roles": {"mailbox": True, "submission": True, "admin": admin}}
    if admin:
        extra["admin"] = {"listen": f"127.0.0.1:{free_port()}"}
    mailbox = node_factory(policy, submission={"listen": [f"127.0.0.1:{free_port()}"]}, gateway=FAST_QUEUE,
                           dns=dns_settings, **extra)
    if admin:
        mailbox.admin_url = f"http://{extra['admin']['listen']}"
    # The gateway presents a certificate from the organisation's CA (the mailbox node's), so the
    # outbound connector's certificate_validation holds.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certs = mailbox.node.certs
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    cert, key = issue_certificate(ca, ca_key, "gw.contoso.test", server=True)
    (tmp_path / "gw.pem").write_bytes(cert)
    (tmp_path / "gw.key").write_bytes(key)
    gateway = node_factory(policy, roles={"mailbox": False, "gateway": True}, dns=dns_settings, gateway={
        "listen": [f"{GATEWAY}:{gw_port}"], "downstream": [f"127.0.0.1:{mailbox.port()}"],
        "downstream_ca": str(certs.ca_cert), "source_address": GATEWAY, "hostname": "gw.contoso.test",
        "tls_cert": str(tmp_path / "gw.pem"), "tls_key": str(tmp_path / "gw.key"),
        "outbound_from": ["127.0.0.1/32"], **FAST_QUEUE},
        node={"srs_key_file": str(mailbox.home.keys / "srs.key")})  # one SRS secret for the organisation
    g = gateway.node.settings.gateway
    dns.add(f"{g.arc_selector}._domainkey.{g.arc_domain}", "TXT", (gateway.home.keys / f"arc-{g.arc_selector}.txt").read_text())
    return Org(mailbox, gateway, mx_sink, dns, policy)
