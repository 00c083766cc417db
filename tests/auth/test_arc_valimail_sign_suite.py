"""The ValiMail ARC signing suite (tests/auth/data/arc-sign-tests.yml, the whole of
ValiMail/arc_test_suite's arc-draft-sign-tests.yml) run through mxgate's own sealing path,
as the gateway seals: the chain is validated with `validate_arc` against the loopback DNS
server holding the scenario's key record, forged results with our authserv-id are removed
(`sanitize_inbound_headers` — the suite's messages carry the previous hop's
Authentication-Results under the same id), and `seal_arc` seals with the scenario's key,
domain, selector, fixed timestamp (`t`) and signed header list (`sig-headers`).

What is compared, and why not byte for byte:
- ARC-Message-Signature: a, c, d, s, i, t, h and bh= must equal the suite's. bh= is the body
  hash, so every body-canonicalization case is checked exactly.
- ARC-Seal: a, cv, d, s, i, t must equal the suite's; cv is computed from mxgate's own
  validation of the incoming chain (RFC 8617 §5.1.1).
- ARC-Authentication-Results: the instance and every result (method, result, properties)
  the suite expects are present, and the only extra one is mxgate's own `arc=` result, which
  the gateway always records for a message that carries a chain (RFC 8617 §4.1.1 AAR is a
  copy of the sealer's Authentication-Results). Comments such as "(1024-bit key)" are not part
  of the comparison: dkimpy rebuilds the AAR from the parsed results, which drops them.
- b= (both signatures) cannot be compared: each signs the AAR text (and the AS the AMS text),
  which differs from the suite's in the dropped comment, the added arc= and tag order/folding.
  Instead the produced set must validate: pass for a chain mxgate found none/pass, and
  fail (cv=fail, RFC 8617 §5.2 step 2) where mxgate found the incoming chain failed.
Where mxgate deliberately differs from the suite, `DIFFERENCES` names the case and the RFC.
"""
from __future__ import annotations

from pathlib import Path

import authres
import pytest
import yaml
from dkim.util import parse_tag_value

from dnsserver import TestDNSServer
from mxgate.auth.arc import ArcSealError, arc_fields, seal_arc, validate_arc
from mxgate.auth.dns import dnsfunc_for, make_resolver
from mxgate.auth.headers import parse_fields, sanitize_inbound_headers, split_headers

DATA = Path(__file__).parent / "data" / "arc-sign-tests.yml"
SRV_ID = "lists.example.org"

# case id → why mxgate's seal differs from the suite's expected set
DIFFERENCES: dict[str, str] = {}


def _scenarios(text: str) -> list[dict]:
    """The file's scenarios. Two of them lack the '---' between them, so a top-level key seen
    a second time starts the next scenario instead of silently replacing the first's."""
    loader = yaml.SafeLoader("")
    scenarios: list[dict] = []
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        current: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in current:
                scenarios.append(current)
                current = {}
            current[key] = loader.construct_object(value_node, deep=True)
        scenarios.append(current)
    return scenarios


SCENARIOS = _scenarios(DATA.read_text(encoding="utf-8"))
# missing_ams's AAR is indented as a test of its own (a string): not a case.
CASES = [(case_id, scenario, case) for scenario in SCENARIOS
         for case_id, case in scenario["tests"].items() if isinstance(case, dict)]


def _tags(value: str) -> dict[str, str]:
    tags = parse_tag_value(" ".join(value.split()).encode("ascii"))
    return {k.decode(): " ".join(v.decode().split()) for k, v in tags.items()}


def _results(value: str) -> tuple[int, list[tuple]]:
    instance, _, rest = value.partition(";")
    parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + " ".join(rest.split()))
    return (int(instance.strip().removeprefix("i=").strip()),
            [(r.method, r.result, sorted((p.type, p.name, p.value) for p in r.properties)) for r in parsed.results])


@pytest.fixture(scope="module")
def arc_dns():
    with TestDNSServer() as server:
        yield server


def test_the_whole_signing_file_is_there():
    assert [s["description"] for s in SCENARIOS] == [
        "Canonicalization", "Signed Headers", "Existant Seal Headers", "Malformed Arc Sets"]
    assert len(CASES) == 33


@pytest.mark.parametrize("case_id,scenario,case", CASES, ids=[c[0] for c in CASES])
def test_valimail_arc_sign_case(arc_dns, case_id, scenario, case):
    arc_dns.clear()
    for name, value in scenario["txt-records"].items():
        arc_dns.add(name, "TXT", value)
    dnsfunc = dnsfunc_for(make_resolver([arc_dns.address], timeout=1.0), timeout=1.0)
    message = case["message"].encode("utf-8")
    chain = bool(arc_fields(message))  # the gateway's test: any ARC field, even without a seal
    incoming = validate_arc(message, dnsfunc).status if chain else "none"
    ar = " ".join(case["auth-res"].split()) + (f"; arc={incoming}" if chain else "")
    clean = sanitize_inbound_headers(message, SRV_ID)
    try:
        seal = seal_arc(clean, SRV_ID, scenario["domain"], scenario["sel"], scenario["privatekey"].encode(),
                        ar, timestamp=int(case["t"]), sign_headers=case["sig-headers"].split(":"))
    except ArcSealError as exc:
        assert case_id in DIFFERENCES, (case_id, str(exc))
        return
    assert case_id not in DIFFERENCES, "the case now seals: update DIFFERENCES"
    head, _ = split_headers(seal)
    made = {f.name.decode(): f.value.decode() for f in parse_fields(head)}
    ams, as_ = _tags(made["arc-message-signature"]), _tags(made["arc-seal"])
    want_ams, want_as = _tags(case["AMS"]), _tags(case["AS"])
    for tag in ("a", "c", "d", "s", "i", "t", "bh"):
        assert ams[tag] == want_ams[tag], (tag, ams, want_ams)
    assert [h.strip().lower() for h in ams["h"].split(":")] == want_ams["h"].split(":")
    for tag in ("a", "cv", "d", "s", "i", "t"):
        assert as_[tag] == want_as[tag], (tag, as_, want_as)
    if "AAR" in case:
        instance, results = _results(made["arc-authentication-results"])
        want_instance, want_results = _results(case["AAR"])
        assert instance == want_instance
        assert [r for r in results if r[0] != "arc"] == want_results
        assert [r[1] for r in results if r[0] == "arc"] == ([incoming] if chain else [])
    sealed = seal + f"Authentication-Results: {ar}\n".encode() + clean
    assert validate_arc(sealed, dnsfunc).status == ("fail" if want_as["cv"] == "fail" else "pass")
