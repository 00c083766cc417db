"""Issue 20: `mxgate exo import` turns a tenant's exports into a validated mxgate policy, shows the
diff, applies only with --apply; the rehearsal — a node running the imported policy, checked with
`mxgate verify` — passes for the guide's tenant and fails, naming the row, for a broken one."""

from __future__ import annotations

import rig
from exokit import REALWORLD, cli, guide_files, load, mxgate, tenant_dir

from mxgate.config.home import Home
from mxgate.policy.document import load_toml
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore

BEFORE = """
[organization]
name = "Contoso"
authserv_id = "mx.contoso.test"

[[accepted_domain]]
name = "contoso.test"

[[mailbox]]
address = "alice@contoso.test"

[[accepted_domain]]
name = "old.test"

[[mailbox]]
address = "bob@old.test"
"""


def _version(home) -> int:
    return PolicyStore(open_engine(Home.open(home).database_url)).current().version


def _home_with(tmp_path, text: str = BEFORE):
    home = tmp_path / "home"
    rig.apply_policy(Home.open(home), text)
    return home


def test_import_shows_the_diff_and_changes_nothing_without_apply(tmp_path):
    home = _home_with(tmp_path)
    r = cli("--home", str(home), "exo", "import", *map(str, guide_files()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "+name = \"Third-party filter service\"" in r.stdout and "-name = \"old.test\"" in r.stdout
    assert "not applied (run again with --apply)" in r.stdout
    assert "bob@old.test" in r.stderr  # named as left out
    assert _version(home) == 1


def test_import_apply_saves_a_validated_policy(tmp_path):
    home = _home_with(tmp_path)
    out = tmp_path / "tenant.toml"
    r = cli("--home", str(home), "exo", "import", *map(str, guide_files()), "--apply", "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "policy version 2" in r.stdout and _version(home) == 2
    policy = PolicyStore(open_engine(Home.open(home).database_url)).current().policy
    assert policy == load_toml(out.read_text())
    c = policy.inbound("Third-party filter service")
    guide = load_toml(rig.GUIDE_POLICY).inbound("Third-party filter service")
    # The tenant built by the guide's export comes back as the guide's connector.
    assert c == guide
    assert [m.address for m in policy.mailboxes] == ["alice@contoso.test", "postmaster@contoso.onmicrosoft.com"]
    assert [d.name for d in policy.accepted_domains] == ["contoso.test", "contoso.onmicrosoft.com"]
    again = cli("--home", str(home), "exo", "import", *map(str, guide_files()), "--apply")
    assert "already matches; nothing applied" in again.stdout and _version(home) == 2


def test_import_refuses_what_validation_refuses_and_applies_nothing(tmp_path):
    home = _home_with(tmp_path)
    bad = dict(load("inbound-connectors.json"), SenderIPAddresses=None)  # restrict-to-IP with no address
    d = tenant_dir(tmp_path / "t", inbound_connectors=bad)
    r = cli("--home", str(home), "exo", "import", *map(str, sorted(d.glob("*.json"))), "--apply")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Third-party filter service" in r.stderr and "restrict" in r.stderr
    assert _version(home) == 1


def test_real_world_tenant_imports_without_a_home(tmp_path):
    """No node home: the diff is against an empty policy and nothing is created on disk."""
    r = mxgate("exo", "import", *map(str, sorted(REALWORLD.glob("*.json"))), "--output", str(tmp_path / "p.toml"),
               cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "mxgate-data").exists()
    policy = load_toml((tmp_path / "p.toml").read_text())
    assert policy.organization.name == "Contoso"
    gw = policy.inbound("Gateway")
    assert gw.sender_ip_addresses == ("203.0.113.10/31", "203.0.113.12/31", "198.51.100.0/24", "192.0.2.25")
    assert "ExternalRelay has no mxgate equivalent" in r.stderr
    assert "range 203.0.113.10-203.0.113.13 is 203.0.113.10/31, 203.0.113.12/31" in r.stderr


def _rehearse(node_factory, tmp_path, files):
    home = tmp_path / "rehearsal"
    Home.open(home)
    r = mxgate("--home", str(home), "exo", "import", *map(str, files), "--apply")
    assert r.returncode == 0, r.stdout + r.stderr
    node = node_factory(None, home_dir=home)
    port = int(node.node.listeners["mailbox"].addresses[0].rsplit(":", 1)[1])
    return mxgate("--home", str(home), "verify", "--target", f"127.0.0.1:{port}")


def test_rehearsal_of_the_guide_tenant_passes_verify(node_factory, tmp_path):
    proc = _rehearse(node_factory, tmp_path, guide_files())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASS    bypass 'Third-party filter service' from 127.0.0.66" in proc.stdout
    assert "PASS    gateway 'Third-party filter service' from 127.0.0.10" in proc.stdout
    assert proc.stdout.splitlines()[-1].endswith("0 failed, 0 skipped: PASS")


def test_rehearsal_of_a_disabled_lockdown_fails_verify(node_factory, tmp_path):
    d = tenant_dir(tmp_path / "t", inbound_connectors=dict(load("inbound-connectors.json"), Enabled=False))
    proc = _rehearse(node_factory, tmp_path, sorted(d.glob("*.json")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL    bypass 'Third-party filter service' (disabled) from 127.0.0.66" in proc.stdout
    assert "is disabled" in proc.stdout
