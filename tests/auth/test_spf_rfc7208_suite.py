"""The RFC 7208 SPF test suite (openspf.org release 2014.04, as shipped in pyspf 2.0.14's sdist;
tests/auth/data/rfc7208-tests.yml, BSD licence beside it) run through mxgate's own SPF path:
`auth.spf.check_spf` → pyspf → dnspython's default resolver, installed by mxgate, asking the
loopback DNS server that holds each scenario's zone. A `TIMEOUT` in the data is a name the
server never answers. Where mxgate's answer differs, `DIFFERENCES` names the case and why."""
from __future__ import annotations

from pathlib import Path

import dns.name
import pytest
import yaml

from dnsserver import TestDNSServer
from mxgate.auth.dns import install_default_resolver, make_resolver
from mxgate.auth.spf import check_spf

DATA = Path(__file__).parent / "data" / "rfc7208-tests.yml"
# pyspf gives each lookup the whole check's budget: a TIMEOUT name costs CHECK_BUDGET. Loopback
# answers take milliseconds even on a loaded machine, so both leave a wide margin.
LOOKUP_TIMEOUT = 1.0
CHECK_BUDGET = 2.0
TYPES = ("A", "AAAA", "MX", "TXT", "PTR", "CNAME")

# The suite's reference driver sets the default explanation to "DEFAULT"; mxgate keeps pyspf's.
DEFAULT_EXPLANATION = "SPF fail - not authorized"
# case id → (mxgate's result, why it differs from the suite's expectation). Empty: after the
# fix of `ptr` DNS errors (auth/spf.py `_Query`, RFC 7208 §5.5) every case agrees.
DIFFERENCES: dict[str, tuple[str, str]] = {}


def _scenarios() -> list[dict]:
    return list(yaml.safe_load_all(DATA.read_text(encoding="utf-8")))


def _cases() -> list[tuple[str, dict, dict]]:
    return [(case_id, scenario, case) for scenario in _scenarios() for case_id, case in scenario["tests"].items()]


CASES = _cases()


def _txt(value) -> list[bytes] | None:
    if value == "NONE" or value == ["NONE"]:
        return None
    strings = [value] if isinstance(value, str) else list(value)
    return [s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s for s in strings]


def load_zone(server: TestDNSServer, zonedata: dict) -> None:
    """The suite's zone on the server, the way its reference driver reads it: SPF (type 99)
    records are served as TXT when the name has no TXT of its own (RFC 7208 dropped type 99)."""
    server.clear()
    for name, records in (zonedata or {}).items():
        try:
            dns.name.from_text(name)
        except dns.exception.DNSException:
            continue  # a name that cannot exist on the wire (over-long label): never answers
        has_txt = any(isinstance(r, dict) and "TXT" in r for r in records)
        answered: set[str] = set()
        for record in records:
            if record == "TIMEOUT":
                for rdtype in TYPES:
                    if rdtype not in answered:
                        server.silence(name, rdtype)
                continue
            for rdtype, value in record.items():
                if rdtype == "SPF":
                    if has_txt:
                        continue
                    rdtype = "TXT"
                if value == "TIMEOUT":
                    server.silence(name, rdtype)
                    continue
                if rdtype == "TXT":
                    strings = _txt(value)
                    if strings is not None:  # `TXT: NONE` only stops SPF → TXT duplication
                        server.add(name, "TXT", strings if strings else [b""])
                        answered.add(rdtype)
                elif rdtype == "MX":
                    server.add(name, "MX", (value[0], value[1]))
                else:
                    server.add(name, rdtype, value)
                if rdtype != "TXT":
                    answered.add(rdtype)


@pytest.fixture(scope="module")
def suite_dns():
    with TestDNSServer() as server:
        previous = install_default_resolver(make_resolver([server.address], timeout=LOOKUP_TIMEOUT))
        try:
            yield server
        finally:
            install_default_resolver(previous)


def test_the_suite_is_all_there():
    assert len(CASES) == 203 and len(_scenarios()) == 16


@pytest.mark.parametrize("case_id,scenario,case", CASES, ids=[c[0] for c in CASES])
def test_rfc7208_case(suite_dns, case_id, scenario, case):
    load_zone(suite_dns, scenario.get("zonedata"))
    got = check_spf(case["host"], case["mailfrom"], case["helo"], timeout=CHECK_BUDGET)
    expected = case["result"] if isinstance(case["result"], list) else [case["result"]]
    if case_id in DIFFERENCES:
        mxgate_result, why = DIFFERENCES[case_id]
        assert got.result == mxgate_result and got.result not in expected, why
        return
    assert got.result in expected, (case.get("description"), case.get("spec"), got)
    if "explanation" in case and got.result == "fail":  # exp= (RFC 7208 §6.2), macros included
        want = case["explanation"]
        assert got.explanation == (DEFAULT_EXPLANATION if want == "DEFAULT" else want)
