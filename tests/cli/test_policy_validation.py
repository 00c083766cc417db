"""Issue 2 must-shows 2 and 3: the guide's policy applies and exports identically; each validation
rule of mail-flow.md §2, fed through the CLI, exits 2 with a message naming the rule and leaves the
store unchanged."""

from __future__ import annotations

import json

import pytest

import rig

BASE = rig.GUIDE_POLICY


def _history(run):
    return json.loads(run("policy", "history", "--json").stdout)


def test_guide_policy_applies_and_export_round_trips(run, tmp_path):
    f = tmp_path / "guide.toml"
    f.write_text(BASE)
    r = run("policy", "apply", str(f))
    assert r.exit_code == 0, r.output
    exported = run("policy", "export").stdout
    assert 'name = "Third-party filter service"' in exported and 'sender_domains = ["*"]' in exported
    assert "restrict_domains_to_ip_addresses = true" in exported and "require_tls = true" in exported
    f2 = tmp_path / "exported.toml"
    f2.write_text(exported)
    assert run("policy", "apply", str(f2)).exit_code == 0
    assert run("policy", "export").stdout == exported  # export → apply → export is byte-identical
    assert len(_history(run)) == 1  # applying the identical policy made no new version
    dry = run("policy", "apply", "--dry-run", str(f))
    assert dry.exit_code == 0 and "dry run" in dry.stdout


CONNECTOR = '''
[[inbound_connector]]
name = "C"
{fields}
'''

# (fields of connector "C", the rule code the error must name)
RULES = [
    ('sender_domains = ["*"]\nrestrict_domains_to_ip_addresses = true', "restrict-ip-needs-addresses"),
    ('sender_domains = ["*"]\nsender_ip_addresses = ["127.0.0.1"]\nrestrict_domains_to_ip_addresses = true\n'
     'restrict_domains_to_certificate = true\ntls_sender_certificate_name = "gw.test"', "restrictions-exclusive"),
    ('sender_domains = ["*"]\nrestrict_domains_to_certificate = true', "restrict-certificate-needs-name"),
    ('sender_domains = ["*"]\ntls_sender_certificate_name = "gw.test"\nrequire_tls = false', "certificate-name-needs-tls"),
    ('type = "on_premises"', "on-premises-needs-ip-or-certificate"),
    ('type = "on_premises"\nsender_ip_addresses = ["127.0.0.30"]\nrestrict_domains_to_ip_addresses = true',
     "restrictions-partner-only"),
    ('sender_domains = ["*"]\nsender_ip_addresses = ["300.1.1.1"]', "invalid-ip"),
    ('sender_domains = ["*"]\nsender_ip_addresses = ["10.0.0.1/8"]', "invalid-ip"),
    ('sender_domains = ["a.*.b"]', "invalid-domain-pattern"),
    ('sender_domains = ["not_a domain"]', "invalid-domain-pattern"),
    ('sender_domains = ["*"]\ntls_sender_certificate_name = "*"', "invalid-certificate-name"),
    ('sender_domains = ["*"]\nassociated_accepted_domains = ["fabrikam.test"]', "associated-domain-not-accepted"),
    ('sender_domains = []', "sender-domains-required"),
    ('sender_domains = ["*"]\ntls_sender_certificate_fingerprints = ["abc"]', "invalid-fingerprint"),
    ('sender_domains = ["*"]\nef_skip_last_ip = true\nef_skip_ips = ["192.0.2.1"]', "ef-skip-exclusive"),
    ('sender_domains = ["*"]\ncomment = "' + "x" * 1025 + '"', "comment-too-long"),
]


@pytest.mark.parametrize("fields, rule", RULES, ids=[r for _, r in RULES])
def test_each_rule_refused_with_exit_2_and_store_unchanged(run, tmp_path, fields, rule):
    good = tmp_path / "good.toml"
    good.write_text(BASE)
    assert run("policy", "apply", str(good)).exit_code == 0
    before = run("policy", "export").stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + CONNECTOR.format(fields=fields))
    r = run("policy", "apply", str(bad))
    assert r.exit_code == 2, r.output
    assert f"[rule {rule}]" in r.stderr and "inbound connector 'C'" in r.stderr
    assert run("policy", "export").stdout == before
    assert len(_history(run)) == 1


def test_duplicate_connector_name_refused(run, tmp_path):
    f = tmp_path / "dup.toml"
    f.write_text(BASE + CONNECTOR.format(fields='sender_domains = ["*"]').replace('"C"', '"third-party FILTER service"'))
    r = run("policy", "apply", str(f))
    assert r.exit_code == 2 and "[rule duplicate-name]" in r.stderr


def test_cli_verbs_validate_the_same_way(run):
    assert run("domain", "new", "contoso.test").exit_code == 0
    r = run("connector", "new", "C", "--sender-domains", "*", "--restrict-domains-to-ip-addresses")
    assert r.exit_code == 2 and "[rule restrict-ip-needs-addresses]" in r.stderr
    r = run("connector", "new", "Third-party filter service", "--sender-domains", "*", "--sender-ip", "127.0.0.10",
            "--restrict-domains-to-ip-addresses")
    assert r.exit_code == 0
    r = run("connector", "set", "Third-party filter service", "--sender-ip-addresses", "")
    assert r.exit_code == 2 and "[rule restrict-ip-needs-addresses]" in r.stderr
    shown = json.loads(run("connector", "show", "third-party filter service", "--json").stdout)
    assert shown["sender_ip_addresses"] == ["127.0.0.10"]
    r = run("connector", "new", "X", "--smart-hosts", "gw.test")
    assert r.exit_code == 2 and "outbound connectors only" in r.stderr
    assert run("connector", "new", "Out", "--outbound", "--recipient-domains", "*", "--smart-hosts", "127.0.0.10:2526").exit_code == 0
    assert run("connector", "remove", "nope").exit_code == 1
    assert json.loads(run("connector", "list", "--outbound", "--json").stdout)[0]["smart_hosts"] == ["127.0.0.10:2526"]


def test_format_errors_name_the_key(run, tmp_path):
    f = tmp_path / "typo.toml"
    f.write_text(BASE + '\n[[inbound_connector]]\nname = "X"\nsender_domain = ["*"]\n')
    r = run("policy", "apply", str(f))
    assert r.exit_code == 2 and "unknown key 'sender_domain'" in r.stderr
    f.write_text("[organization\n")
    r = run("policy", "apply", str(f))
    assert r.exit_code == 2 and "not valid TOML" in r.stderr


def test_global_config_selects_the_store_the_node_uses(run, tmp_path):
    config = tmp_path / "node.toml"
    db = tmp_path / "elsewhere.db"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n')
    f = tmp_path / "guide.toml"
    f.write_text(BASE)
    assert run("--config", str(config), "policy", "apply", str(f)).exit_code == 0
    assert db.exists()
    assert len(json.loads(run("--config", str(config), "policy", "history", "--json").stdout)) == 1
    assert json.loads(run("policy", "history", "--json").stdout) == []  # the home's own database is untouched
