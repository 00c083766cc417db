"""The ValiMail ARC test suite's chain validation (tests/auth/data/arc-validation-tests.yml,
the whole of ValiMail/arc_test_suite's arc-draft-validation-tests.yml: 156 cases) run through
mxgate's own ARC path: `auth.arc.validate_arc` with mxgate's TXT lookup (`auth.dns.dnsfunc_for`)
against the loopback DNS server holding each scenario's `txt-records`. The suite's cv
None/Pass/Fail is RFC 8617's chain validation status, which mxgate reports as none/pass/fail.
Where mxgate differs, `DIFFERENCES` names the case and the RFC that decides it; no case is
skipped, and a listed difference that stops differing fails the test."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnsserver import TestDNSServer
from mxgate.auth.arc import validate_arc
from mxgate.auth.dns import dnsfunc_for, make_resolver

DATA = Path(__file__).parent / "data" / "arc-validation-tests.yml"

# case id → (mxgate's status, why it differs from the suite's cv)
DIFFERENCES: dict[str, tuple[str, str]] = {
    "arc_set_duplicate": ("fail", "RFC 8617 §4.2.1: each instance appears exactly once; a second, even identical, "
                                  "set makes the chain structurally invalid (§5.2 step 2 → fail). The draft-era suite "
                                  "accepted exact duplicates. Failing is the side that never lets ARC override DMARC."),
    "ams_fields_a_sha1": ("fail", "RFC 8617 §4.1.2: the AMS has DKIM-Signature semantics, and RFC 8301 §3.1 says "
                                  "rsa-sha1 MUST NOT be used for verifying; the draft-era suite still accepted it."),
    "as_fields_a_sha1": ("fail", "RFC 8617 §5.1.1 verifies the ARC-Seal like a DKIM signature, and RFC 8301 §3.1 "
                                 "forbids verifying rsa-sha1."),
    "as_fields_b_512": ("fail", "RFC 8301 §3.2: keys shorter than 1024 bits need not (and here do not) verify; "
                                "the suite's own comment on this case says 512-bit keys should not be supported."),
    "ams_fields_c_na": ("pass", "RFC 8617 §4.1.2 gives the AMS DKIM-Signature syntax, where c= is optional and "
                                "defaults to simple/simple (RFC 6376 §3.5); this signature verifies under that "
                                "default, so the set is valid. The draft-era suite required c=."),
    "as_fields_t_na": ("pass", "RFC 8617 §4.1.3 takes the ARC-Seal's t= from RFC 6376 §3.5, where it is "
                               "RECOMMENDED, not REQUIRED; a seal without it that verifies is valid (the suite "
                               "itself passes an AMS without t=, ams_fields_t_na). The draft-era suite required it."),
}


def _cases() -> list[tuple[str, dict, dict]]:
    """Every case in file order. A case name repeated within a scenario (the original has four)
    is kept as `<name>#2`: a plain YAML load would silently drop the first copy."""
    loader = yaml.SafeLoader("")
    cases: list[tuple[str, dict, dict]] = []
    for node in yaml.compose_all(DATA.read_text(encoding="utf-8"), Loader=yaml.SafeLoader):
        doc = {loader.construct_object(k, deep=True): v for k, v in node.value}
        records = loader.construct_object(doc["txt-records"], deep=True)
        seen: dict[str, int] = {}
        for key_node, value_node in doc["tests"].value:
            name = loader.construct_object(key_node, deep=True)
            seen[name] = seen.get(name, 0) + 1
            case_id = name if seen[name] == 1 else f"{name}#{seen[name]}"
            cases.append((case_id, records, loader.construct_object(value_node, deep=True)))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def arc_dns():
    with TestDNSServer() as server:
        yield server


def test_the_whole_file_is_there():
    assert len(CASES) == 156
    assert {c["cv"].strip() for _, _, c in CASES} == {"None", "Pass", "Fail"}
    assert set(DIFFERENCES) <= {case_id for case_id, _, _ in CASES}


@pytest.mark.parametrize("case_id,records,case", CASES, ids=[c[0] for c in CASES])
def test_valimail_arc_case(arc_dns, case_id, records, case):
    arc_dns.clear()
    for name, value in records.items():
        arc_dns.add(name, "TXT", value)
    dnsfunc = dnsfunc_for(make_resolver([arc_dns.address], timeout=1.0), timeout=1.0)
    result = validate_arc(case["message"].encode("utf-8"), dnsfunc)
    expected = case["cv"].strip().lower()
    if case_id in DIFFERENCES:
        status, why = DIFFERENCES[case_id]
        assert result.status == status != expected, why
        return
    assert result.status == expected, (case["description"], result)
    if expected == "pass":  # what each sealer recorded is kept for the override decision
        assert result.auth_results and result.auth_results[-1][1].startswith("lists.example.org;")
