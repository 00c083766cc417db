"""Issue 22, point 6: the development DNS server is a tool.

`mxgate dev dns --listen 127.0.0.1:PORT --zone FILE` serves a zone file (BIND-style or TOML),
reloads it when the file changes (mtime polled; here the poll is triggered by the test, or
waited for on the answer itself — never by sleeping), and puts the zone's SOA in negative
answers (RFC 2308 §3) so resolvers cache misses as with real servers. Real queries over UDP on
loopback with dnspython's client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from rig import wait_until

from mxgate.devtools.dnsserver import TestDNSServer, ZoneFileServer
from mxgate.devtools.dnszone import ZoneFileError, load_zone_file

BIND_ZONE = """\
$ORIGIN fabrikam.test.
$TTL 300
@        IN SOA  ns1 hostmaster 2026120101 3600 600 86400 120
@        IN NS   ns1
@        IN MX   10 mx
@        IN TXT  "v=spf1 ip4:203.0.113.7 -all"
mx       IN A    203.0.113.7
ns1      IN A    203.0.113.53
_dmarc   IN TXT  "v=DMARC1; p=reject"
"""

TOML_ZONE = """\
ttl = 300
negative_ttl = 90

["contoso.test"]
MX = ["10 mx.contoso.test."]
TXT = ["v=spf1 -all"]

["mx.contoso.test"]
A = ["192.0.2.25"]
AAAA = ["2001:db8::25"]
"""


def ask(port: int, name: str, rdtype: str = "A", timeout: float = 2.0) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=port, timeout=timeout)


def answers(reply: dns.message.Message) -> list[str]:
    return sorted(r.to_text() for rrset in reply.answer for r in rrset)


def soa_of(reply: dns.message.Message):
    [rrset] = [r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]
    return rrset


@pytest.fixture
def zone_server(tmp_path):
    servers = []

    def start(text: str, name: str = "zone.db") -> ZoneFileServer:
        path = tmp_path / name
        path.write_text(text)
        server = ZoneFileServer(path, host="127.0.0.1", poll_interval=None)  # the test triggers the poll
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.close()


def test_bind_zone_file_is_served_over_udp(zone_server):
    srv = zone_server(BIND_ZONE)
    r = ask(srv.port, "mx.fabrikam.test")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
    assert answers(r) == ["203.0.113.7"] and r.answer[0].ttl == 300
    assert answers(ask(srv.port, "fabrikam.test", "MX")) == ["10 mx.fabrikam.test."]
    assert answers(ask(srv.port, "_dmarc.fabrikam.test", "TXT")) == ['"v=DMARC1; p=reject"']


def test_negative_answers_carry_the_zones_soa(zone_server):
    srv = zone_server(BIND_ZONE)
    nx = ask(srv.port, "nowhere.fabrikam.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.answer
    soa = soa_of(nx)
    assert soa.name.to_text() == "fabrikam.test." and soa[0].minimum == 120
    assert soa.ttl == 120  # RFC 2308 §3: min(SOA TTL, SOA MINIMUM) is the negative TTL
    nodata = ask(srv.port, "mx.fabrikam.test", "TXT")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert soa_of(nodata).name.to_text() == "fabrikam.test."


def test_a_caching_resolver_caches_the_miss_for_the_soa_minimum(zone_server):
    srv = zone_server(BIND_ZONE)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = ["127.0.0.1"], srv.port
    resolver.cache = dns.resolver.Cache()
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nowhere.fabrikam.test", "A")
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nowhere.fabrikam.test", "A")
    asked = [q for q in srv.queries if q[0] == "nowhere.fabrikam.test"]
    assert len(asked) == 1  # the second miss came from the resolver's negative cache


def test_toml_zone_file_with_its_negative_ttl(zone_server):
    srv = zone_server(TOML_ZONE, "zone.toml")
    assert answers(ask(srv.port, "mx.contoso.test", "AAAA")) == ["2001:db8::25"]
    assert answers(ask(srv.port, "contoso.test", "MX")) == ["10 mx.contoso.test."]
    nx = ask(srv.port, "nope.contoso.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN and soa_of(nx).ttl == 90 and soa_of(nx)[0].minimum == 90


def test_reload_on_change_keeps_the_old_zone_when_the_new_one_is_broken(zone_server):
    srv = zone_server(BIND_ZONE)
    assert srv.check_reload() is False  # unchanged
    path = srv.zone_file.path
    path.write_text(BIND_ZONE.replace("203.0.113.7", "203.0.113.8") + "new IN A 198.51.100.1\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))  # a distinct mtime
    assert srv.check_reload() is True
    assert answers(ask(srv.port, "mx.fabrikam.test")) == ["203.0.113.8"]
    assert answers(ask(srv.port, "new.fabrikam.test")) == ["198.51.100.1"]
    path.write_text("this is not a zone {\n")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 2_000_000))
    assert srv.check_reload() is False and srv.last_error and "zone.db" in srv.last_error
    assert answers(ask(srv.port, "mx.fabrikam.test")) == ["203.0.113.8"]  # still the last good zone


@pytest.mark.parametrize("text, name", [("@ IN A 1.2.3.4\n", "zone.db"), ('["x.test"]\nBOGUS = ["1"]\n', "zone.toml"),
                                        ('["x.test"]\nA = ["not an address"]\n', "zone.toml")])
def test_bad_zone_files_are_refused_with_the_file_named(tmp_path, text, name):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ZoneFileError) as err:
        load_zone_file(path)
    assert name in str(err.value)


def test_the_tests_own_server_answers_misses_with_the_zones_soa_when_asked():
    with TestDNSServer() as srv:
        srv.add("a.fabrikam.test", "A", "192.0.2.1")
        srv.add("fabrikam.test", "SOA", "ns.fabrikam.test. hostmaster.fabrikam.test. 7 3600 600 86400 45")
        assert not ask(srv.port, "b.fabrikam.test").authority  # default: as this machine's own resolver
        srv.set_negative_soa(True)
        nx = ask(srv.port, "b.fabrikam.test")
        assert nx.rcode() == dns.rcode.NXDOMAIN and soa_of(nx).name.to_text() == "fabrikam.test."
        assert soa_of(nx)[0].serial == 7 and soa_of(nx).ttl == 45  # the zone's own SOA, not a made-up one


# --- the command ----------------------------------------------------------------------------

def _free_udp_and_tcp_port() -> int:
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def _answer_or_none(port: int, name: str, timeout: float = 2.0):
    try:
        return answers(ask(port, name, timeout=timeout))
    except (dns.exception.Timeout, OSError):
        return None


def test_mxgate_dev_dns_serves_reloads_and_answers_misses_with_the_soa(tmp_path):
    zone = tmp_path / "zone.db"
    zone.write_text(BIND_ZONE)
    port = _free_udp_and_tcp_port()
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "mxgate", "dev", "dns", "--listen", f"127.0.0.1:{port}",
                             "--zone", str(zone), "--poll", "0.05"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: _answer_or_none(port, "mx.fabrikam.test") == ["203.0.113.7"], timeout=20)
        nx = ask(port, "nowhere.fabrikam.test")
        assert nx.rcode() == dns.rcode.NXDOMAIN and soa_of(nx).name.to_text() == "fabrikam.test."
        zone.write_text(BIND_ZONE + "added IN A 198.51.100.9\n")
        os.utime(zone, ns=(zone.stat().st_atime_ns, zone.stat().st_mtime_ns + 1_000_000))
        # Wait on the answer itself (the server polls the file's mtime), not on a clock.
        assert wait_until(lambda: _answer_or_none(port, "added.fabrikam.test") == ["198.51.100.9"], timeout=10)
        proc.send_signal(__import__("signal").SIGHUP)  # an explicit reload of an unchanged file is harmless
        assert _answer_or_none(port, "added.fabrikam.test") == ["198.51.100.9"]
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{port}" in out and "reloaded" in out


@pytest.mark.parametrize("listen", ["0.0.0.0:5353", "192.0.2.1:53", "nonsense"])
def test_mxgate_dev_dns_listens_on_loopback_only(tmp_path, listen):
    zone = tmp_path / "zone.db"
    zone.write_text(BIND_ZONE)
    r = subprocess.run([sys.executable, "-m", "mxgate", "dev", "dns", "--listen", listen, "--zone", str(zone)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "loopback" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_mxgate_dev_dns_names_a_broken_zone_file(tmp_path):
    zone = tmp_path / "zone.toml"
    zone.write_text('["x.test"]\nA = ["999.1.1.1"]\n')
    r = subprocess.run([sys.executable, "-m", "mxgate", "dev", "dns", "--listen", "127.0.0.1:0", "--zone", str(zone)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "zone.toml" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_mxgate_dev_dns_can_play_a_lossy_resolver(tmp_path):
    """--drop and --no-negative-soa: the benchmark's P8 resolver (bench/peers.py DnsServer(lossy=True))."""
    zone = tmp_path / "zone.toml"
    zone.write_text(TOML_ZONE)
    port = _free_udp_and_tcp_port()
    proc = subprocess.Popen([sys.executable, "-m", "mxgate", "dev", "dns", "--listen", f"127.0.0.1:{port}",
                             "--zone", str(zone), "--drop", "0.5", "--no-negative-soa"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: _answer_or_none(port, "mx.contoso.test") == ["192.0.2.25"], timeout=20)
        replies = [_answer_or_none(port, "mx.contoso.test", timeout=0.3) for _ in range(20)]
        assert None in replies and ["192.0.2.25"] in replies  # some lost, some answered
        negatives = []
        for _ in range(40):  # seeded drops: a handful of tries gets an answer
            try:
                negatives.append(ask(port, "nope.contoso.test", timeout=0.3))
                break
            except dns.exception.Timeout:
                continue
        [nx] = negatives
        assert nx.rcode() == dns.rcode.NXDOMAIN and not nx.authority
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
