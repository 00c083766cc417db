"""Session 10, tried from outside: what an operator hands the CLI by mistake — a policy or node
file that is not UTF-8 text (a file saved in Latin-1, a binary picked by tab completion), a backup
directory whose manifest was edited into another shape, an id too big for the database — gets one
line naming the problem and the documented exit code (README, "The CLI": 2 validation, 1 other),
never a Python traceback (CliRunner's catch_exceptions=False turns one into a test failure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import rig

NOT_UTF8 = "[organization]\nname = \"Caf\xe9\"\n".encode("latin-1")  # a Latin-1 editor's save
TOO_BIG = str(2**63)  # one past the largest SQL BIGINT: no row can have this id


def _serve(tmp_path, settings: str) -> subprocess.CompletedProcess:
    """`mxgate serve` in a process of its own with this node.toml (it is to refuse to start)."""
    config = tmp_path / "node.toml"
    config.write_text(settings)
    env = dict(os.environ, MXGATE_NODE__ALLOW_ROOT="true")
    r = subprocess.run([sys.executable, "-m", "mxgate", "--home", str(tmp_path / "home"), "serve", "--config", str(config)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    return r


@pytest.mark.parametrize("verb", [("policy", "validate"), ("policy", "apply"), ("verify", "--target", "127.0.0.1:9",
                                                                                  "--policy")])
def test_a_policy_file_that_is_not_utf8_is_a_validation_error(run, tmp_path, verb):
    f = tmp_path / "latin1.toml"
    f.write_bytes(NOT_UTF8)
    r = run(*verb, str(f))
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error: ") and "not UTF-8" in r.stderr and str(f) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert json.loads(run("policy", "history", "--json").stdout) == []  # nothing applied


def test_a_node_settings_file_that_is_not_utf8_is_a_one_line_error(run, tmp_path):
    config = tmp_path / "node.toml"
    config.write_bytes(b"[node]\nname = \"gw\xff\"\n")
    r = run("--config", str(config), "status")
    assert r.exit_code == 1, r.output
    assert r.stderr.strip() == f"error: {config}: not UTF-8 text"


@pytest.mark.parametrize("manifest", ["[]", '"x"', '{"format": 1, "files": []}', '{"format": 1}'])
def test_restore_of_a_manifest_in_another_shape_says_damaged(run, tmp_path, manifest):
    backup = tmp_path / "backup"
    backup.mkdir()
    (backup / "manifest.json").write_text(manifest)
    r = run("restore", str(backup))
    assert r.exit_code == 1, r.output
    assert "damaged" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (run.home / "mxgate.db").exists()


def test_ids_beyond_the_database_range_do_not_exist(run, tmp_path):
    f = tmp_path / "guide.toml"
    f.write_text(rig.GUIDE_POLICY)
    assert run("policy", "apply", str(f)).exit_code == 0
    r = run("trace", "show", TOO_BIG)
    assert r.exit_code == 1 and r.stderr.strip() == f"error: trace row {TOO_BIG} does not exist"
    for args in (("policy", "diff", TOO_BIG), ("policy", "diff", "1", TOO_BIG)):
        r = run(*args)
        assert r.exit_code == 1 and r.stderr.strip() == f"error: policy version {TOO_BIG} does not exist", args


@pytest.mark.parametrize("day", ["2026-02-30", "2026-13-01", "2026-00-10"])
def test_tls_report_for_a_day_that_does_not_exist_is_refused(run, day):
    """RFC 8460 §4.4: date-range holds RFC 3339 date-times; a report for 2026-02-30 would carry
    "2026-02-30T00:00:00Z", which no receiver parses. The day must exist, not only look like one."""
    r = run("tls-rpt", "report", "--domain", "contoso.test", "--day", day)
    assert r.exit_code == 2 and "--day" in r.stderr and r.stdout == "", r.output
    assert run("tls-rpt", "report", "--domain", "contoso.test", "--day", "2028-02-29").exit_code == 0


def test_an_edit_that_changes_nothing_stores_no_version(run, tmp_path):
    """`policy apply` of the policy in force says "already matches; nothing applied" and stores
    nothing (README: every *change* is a new version); `connector set`, `domain set`, `mailbox
    set` and `org set` with the values already in force stored a version "no change" each time,
    which every node then loads and announces. They now answer as apply does."""
    f = tmp_path / "guide.toml"
    f.write_text(rig.GUIDE_POLICY)
    assert run("policy", "apply", str(f)).exit_code == 0
    connector = json.loads(run("connector", "list", "--json").stdout)[0]
    for args in (("connector", "set", connector["name"], "--sender-ip-addresses", *connector["sender_ip_addresses"][:1],
                  *[x for ip in connector["sender_ip_addresses"][1:] for x in ("--sender-ip-addresses", ip)]),
                 ("connector", "set", connector["name"], "--require-tls"),
                 ("domain", "set", "contoso.test", "--type", "authoritative"),
                 ("mailbox", "set", "alice@contoso.test", "--keep-copy"),
                 ("org", "set", "--name", "Contoso")):
        r = run(*args)
        assert r.exit_code == 0, (args, r.output)
        assert "policy version 1 already matches; nothing applied" in r.stdout, (args, r.output)
    assert [v["version"] for v in json.loads(run("policy", "history", "--json").stdout)] == [1]
    r = run("connector", "set", connector["name"], "--comment", "changed")
    assert r.exit_code == 0 and r.stdout.startswith("policy version 2: ")


@pytest.mark.parametrize("section,key", [("mailbox", "trusted_proxies"), ("gateway", "trusted_proxies"),
                                         ("submission", "trusted_proxies"), ("gateway", "outbound_from"),
                                         ("mailbox", "non_routable")])
def test_a_bad_cidr_in_node_settings_is_named_when_they_are_read(run, tmp_path, section, key):
    """`mxgate serve` with `trusted_proxies = ["10.0.0.0/40"]` died in a traceback from inside the
    listener's start; the settings file is where the mistake is, so reading it says so."""
    config = tmp_path / "node.toml"
    config.write_text(f'[{section}]\n{key} = ["127.0.0.1", "10.0.0.0/40"]\n')
    r = run("--config", str(config), "status")
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith(f"error: node settings: {section}.{key}: ") and "10.0.0.0/40" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_refuses_a_bad_cidr_in_one_line(tmp_path):
    r = _serve(tmp_path, '[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:0"]\ntrusted_proxies = ["fe80::/129"]\n')
    assert r.stderr.strip().splitlines()[-1].startswith("error: node settings: mailbox.trusted_proxies: "), r.stderr


def test_non_routable_keeps_accepting_a_prefix_with_host_bits():
    """auth/skiplist.py reads non_routable with strict=False: '10.1.2.3/8' was, and stays, 10.0.0.0/8."""
    from mxgate.config.node import load_settings

    assert load_settings(overrides={"mailbox.non_routable": ["10.1.2.3/8"]}).mailbox.non_routable == ["10.1.2.3/8"]


@pytest.mark.parametrize("snippet,key,bad", [
    ('[dns]\nservers = ["10.0.0.53", "resolver.example"]\n', "dns.servers", "resolver.example"),
    ('[dns]\nservers = ["127.0.0.1:99999"]\n', "dns.servers", "127.0.0.1:99999"),
    ('[gateway]\ndownstream = ["10.0.2.11:25", "mbx2.example"]\n', "gateway.downstream", "mbx2.example"),
    ('[gateway]\ndownstream = ["10.0.2.11:250000"]\n', "gateway.downstream", "10.0.2.11:250000"),
])
def test_a_bad_server_address_in_node_settings_is_named_when_they_are_read(run, tmp_path, snippet, key, bad):
    """`[dns] servers = ["resolver.example"]` (a name where the resolver needs an address) ended
    `mxgate serve` in a traceback; `[gateway] downstream = ["mbx2.example"]` (no port) started
    a gateway whose every relay would fail. Both are named when node.toml is read."""
    config = tmp_path / "node.toml"
    config.write_text(snippet)
    r = run("--config", str(config), "status")
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith(f"error: node settings: {key}: ") and bad in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_serve_names_a_missing_downstream_ca(tmp_path):
    """`[gateway] downstream_ca` naming no file ended `mxgate serve` with "error: No such file or
    directory" — not which file, nor which setting."""
    missing = tmp_path / "mailbox-ca.pem"
    r = _serve(tmp_path, '[roles]\nadmin = false\nmailbox = false\ngateway = true\n'
                         f'[gateway]\nlisten = ["127.0.0.1:0"]\ndownstream_ca = "{missing}"\n')
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [gateway] downstream_ca: cannot load ") and str(missing) in last, r.stderr


def test_serve_names_client_ca_when_it_is_the_file_missing(tmp_path):
    """A missing `[mailbox] client_ca` was reported as "[mailbox] tls_cert/tls_key: cannot load
    <the generated pair>", sending the operator to settings that were fine."""
    missing = tmp_path / "partners-ca.pem"
    r = _serve(tmp_path, f'[roles]\nadmin = false\n[mailbox]\nlisten = ["127.0.0.1:0"]\nclient_ca = "{missing}"\n')
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: [mailbox] tls_cert/tls_key/client_ca: cannot load ") and str(missing) in last, r.stderr


def test_dkim_keys_only_for_accepted_domains_and_overlaps_not_negative(run, tmp_path):
    """`keys rotate dkim --domain 'bad domain'` made a key and printed a TXT record for a name that
    is no domain; for a domain the organisation does not accept it made one too, while `dkim
    show-dns` and the API refuse both ("DKIM keys are for the organisation's own domains").
    `--overlap-days -5` retired the old key five days in the past. All three are exit 2 now,
    with nothing stored."""
    f = tmp_path / "guide.toml"
    f.write_text(rig.GUIDE_POLICY)
    assert run("policy", "apply", str(f)).exit_code == 0
    for args in (("keys", "rotate", "dkim", "--domain", "bad domain"), ("keys", "rotate", "dkim", "--domain", "nope.test"),
                 ("keys", "dns", "dkim", "--domain", "nope.test"), ("keys", "rotate", "srs", "--overlap-days", "-5")):
        r = run(*args)
        assert r.exit_code == 2 and r.stdout == "" and ("not an accepted domain" in r.stderr or "--overlap-days" in r.stderr), \
            (args, r.output)
    assert json.loads(run("keys", "list", "--json").stdout) == []
    assert run("keys", "rotate", "dkim", "--domain", "Contoso.Test").exit_code == 0  # its own domain, any case
    assert run("keys", "rotate", "srs", "--overlap-days", "0").exit_code == 0


def test_verify_names_a_bad_attacker_address(run):
    for option in ("--attacker", "--attacker6"):
        r = run("verify", "--target", "127.0.0.1:9", option, "not-an-ip")
        assert r.exit_code == 2 and option in r.stderr and "not-an-ip" in r.stderr, r.output


def test_trace_ip_filter_finds_an_address_however_it_is_spelled(run, tmp_path):
    """The trace stores addresses normalised (names.normalize_ip: IPv6 compressed lower-case, an
    IPv4-mapped IPv6 address as IPv4) but `--ip` (and the API's `ip=`) compared the text as typed:
    `--ip 2001:DB8::7` or `--ip ::ffff:203.0.113.9` found nothing, and `--ip 999.1.1.1` answered an
    empty trace instead of saying it is no address. IPv4 and IPv6 are to be treated alike."""
    from mxgate.store.db import open_engine
    from mxgate.trace.store import TraceRecord, TraceStore

    f = tmp_path / "guide.toml"
    f.write_text(rig.GUIDE_POLICY)
    assert run("policy", "apply", str(f)).exit_code == 0
    engine = open_engine(f"sqlite:///{run.home / 'mxgate.db'}")
    try:
        store = TraceStore(engine, node="n1")
        store.record(TraceRecord(trace_id="v6", status="Rejected", sender="a@fabrikam.test", from_ip="2001:db8::7"))
        store.record(TraceRecord(trace_id="v4", status="Rejected", sender="a@fabrikam.test", from_ip="203.0.113.9"))
        assert store.flush()
    finally:
        engine.dispose()
    for typed, trace_id in (("2001:DB8::7", "v6"), ("2001:0db8:0:0::0007", "v6"), ("::ffff:203.0.113.9", "v4"),
                            ("203.0.113.9", "v4")):
        r = run("trace", "--ip", typed, "--json")
        assert r.exit_code == 0 and [row["trace_id"] for row in json.loads(r.stdout)] == [trace_id], (typed, r.output)
    r = run("trace", "--ip", "999.1.1.1")
    assert r.exit_code == 2 and "999.1.1.1" in r.stderr and r.stderr.startswith("error: ip: "), r.output


def test_a_store_that_cannot_be_opened_is_one_line(run, tmp_path, monkeypatch):
    """SQLAlchemy's text of a driver error ends in a second line, "(Background on this error at:
    https://sqlalche.me/...)": the operator needs the driver's reason, on the error line."""
    monkeypatch.setenv("MXGATE_STORE_URL", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    r = run("status")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "cannot open or migrate the database" in r.stderr and "unable to open database file" in r.stderr
    assert "sqlalche.me" not in r.stderr


@pytest.mark.parametrize("args", [("quarantine", "list", "--limit", TOO_BIG), ("policy", "history", "--limit", TOO_BIG)])
def test_a_list_limit_past_the_database_range_lists_everything(run, tmp_path, args):
    f = tmp_path / "guide.toml"
    f.write_text(rig.GUIDE_POLICY)
    assert run("policy", "apply", str(f)).exit_code == 0
    r = run(*args, "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == (1 if args[0] == "policy" else 0)


@pytest.mark.parametrize("snippet,where", [("[dns]\ntimeout = nan\n", "dns"),
                                           ("[mailbox.limits]\ncommand_timeout = nan\n", "mailbox.limits"),
                                           ("[gateway]\nrelay_timeout = nan\n", "gateway")])
def test_nan_in_node_settings_is_refused_when_they_are_read(run, tmp_path, snippet, where):
    """TOML has nan, and only a bound (ge=0) refuses it: `[dns] timeout = nan`, which has none, reached
    uvloop's call_later, which raises on NaN, so every lookup would fail. Named at reading."""
    config = tmp_path / "node.toml"
    config.write_text(snippet)
    r = run("--config", str(config), "status")
    assert r.exit_code == 1 and r.stderr.startswith(f"error: node settings: {where}: ") and "nan" in r.stderr, r.output
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["evil\nmynetworks = 0.0.0.0/0", "tab\there", "esc\x1b[31mred"])
def test_a_connector_name_with_a_control_character_is_refused(run, tmp_path, name):
    """A connector named "a\\nb" was stored; the Exchange Online export writes it as 'a b' (a
    PowerShell string cannot carry the newline), so the script's Get-InboundConnector -Identity
    never finds what it created and re-running it makes a second connector; the names on the
    terminal were escaped copies. Names are one line of printable text, like the app credentials'."""
    f = tmp_path / "guide.toml"
    f.write_text(rig.GUIDE_POLICY)
    assert run("policy", "apply", str(f)).exit_code == 0
    for args in (("connector", "new", name, "--sender-domains", "*", "--sender-ip-addresses", "10.1.1.1"),
                 ("connector", "new", name, "--outbound", "--recipient-domains", "*", "--smart-hosts", "relay.test:25")):
        r = run(*args)
        assert r.exit_code == 2 and "[rule name-control-character]" in r.stderr, r.output
    assert [v["version"] for v in json.loads(run("policy", "history", "--json").stdout)] == [1]


def test_a_home_that_is_a_file_is_named_as_such(cli_app, tmp_path):
    """`--home node.toml` (a file where the home directory goes) answered "home directory ... does
    not exist" to a reading command and "File exists: ..." to a changing one."""
    from typer.testing import CliRunner

    not_a_dir = tmp_path / "node.toml"
    not_a_dir.write_text("[node]\n")
    for args in (("domain", "list"), ("domain", "new", "x.test")):
        r = CliRunner().invoke(cli_app, ["--home", str(not_a_dir), *args], catch_exceptions=False)
        assert r.exit_code == 2 and r.stderr.strip() == f"error: home directory {not_a_dir} is not a directory", r.output
