"""Fixtures shared by every test: home directories, a throwaway CA, a DNS server, running nodes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import rig  # noqa: E402
from dnsserver import TestDNSServer  # noqa: E402

from mxgate.config.home import Home  # noqa: E402

# Hypothesis's per-example deadline (200 ms) is a wall-clock limit: on a loaded machine an example
# that is merely slow fails the test, which is a test failing by timing. Slowness is bench/'s job.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("mxgate", deadline=None)
_hypothesis_settings.load_profile("mxgate")

# The test machine runs as root; every `mxgate serve` a test starts may stay root (issue 21:
# without [node] user a root node refuses to start unless told). tests/server/test_privileges.py
# clears it to test the refusal and the drop.
os.environ.setdefault("MXGATE_NODE__ALLOW_ROOT", "true")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home.open(tmp_path / "home")


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """A throwaway CA with a server certificate and client certificates for certificate connectors."""
    import trustme

    d = tmp_path_factory.mktemp("ca")
    ca = trustme.CA(organization_name="mxgate test CA")
    other = trustme.CA(organization_name="some other CA")
    files = {"dir": d}
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    other.cert_pem.write_to_path(str(d / "other-ca.pem"))
    server = ca.issue_cert("localhost", "127.0.0.1", "::1", "mx.contoso.test")
    server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    import datetime as dt

    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=30)
    leaves = {
        # file stem: (issuer, name, extra arguments)
        "gateway.partner.test": (ca, "gateway.partner.test", {}),
        "gateway.partner.test-renewed": (ca, "gateway.partner.test", {}),  # same name, new key
        "evil.example": (ca, "evil.example", {}),
        "gateway.partner.test-other-ca": (other, "gateway.partner.test", {}),
        "gateway.partner.test-expired": (ca, "gateway.partner.test",
                                         {"not_before": past - dt.timedelta(days=30), "not_after": past}),
    }
    for stem, (issuer, name, extra) in leaves.items():
        leaf = issuer.issue_cert(name, **extra)
        leaf.cert_chain_pems[0].write_to_path(str(d / f"{stem}.pem"))
        leaf.private_key_pem.write_to_path(str(d / f"{stem}.key"))
        files[stem] = (str(d / f"{stem}.pem"), str(d / f"{stem}.key"))
    files["ca"] = str(d / "ca.pem")
    files["other_ca"] = str(d / "other-ca.pem")
    files["server_cert"] = str(d / "server.pem")
    files["server_key"] = str(d / "server.key")
    files["ca_obj"] = ca
    return files


@pytest.fixture
def dns():
    """A real DNS server on a loopback port (tests add records with dns.add(...))."""
    with TestDNSServer() as server:
        yield server


@pytest.fixture
def node_factory(tmp_path: Path):
    """Start in-process nodes: node_factory(policy_toml, **settings_sections) -> InProcessNode."""
    started: list[rig.InProcessNode] = []

    def make(policy: str | None = rig.GUIDE_POLICY, home_dir: Path | None = None, **sections) -> rig.InProcessNode:
        h = Home.open(home_dir or tmp_path / f"node{len(started)}")
        if policy:
            rig.apply_policy(h, policy)
        settings = rig.node_settings(tmp_path, **sections)
        n = rig.InProcessNode(settings, h).start()
        n.home = h
        started.append(n)
        return n

    yield make
    for n in started:
        n.stop()


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch):
    # Tests only ever talk to loopback; make sure no proxy setting reroutes HTTP clients.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    yield
    os.environ.pop("MXGATE_TEST_DUMMY", None)
