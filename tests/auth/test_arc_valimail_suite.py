"""The ValiMail ARC test suite (tests/auth/data/arc-validation-tests.yml, an excerpt of
ValiMail/arc_test_suite's chain-validation cases) run through mxgate's own ARC path:
`auth.arc.validate_arc` with mxgate's TXT lookup (`auth.dns.dnsfunc_for`) against the loopback
DNS server holding each scenario's `txt-records`. The suite's cv None/Pass/Fail is RFC 8617's
chain validation status, which mxgate reports as none/pass/fail. Where mxgate differs,
`DIFFERENCES` names the case and why."""
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
}


def _cases() -> list[tuple[str, dict, dict]]:
    return [(case_id, doc["txt-records"], case)
            for doc in yaml.safe_load_all(DATA.read_text(encoding="utf-8"))
            for case_id, case in doc["tests"].items()]


CASES = _cases()


@pytest.fixture(scope="module")
def arc_dns():
    with TestDNSServer() as server:
        yield server


def test_the_excerpt_is_all_there():
    assert len(CASES) == 32
    assert {c["cv"].strip() for _, _, c in CASES} == {"None", "Pass", "Fail"}


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
