"""arc._plain_results (the plain-form reader of a trusted sealer's recorded results) answers
exactly what it answered before issue 19's rewrite, on values a sealer — any sender who can
put an ARC set on a message — writes: resinfo built from hostile pieces (quotes, comments,
`;`, `\\`, repeated properties, method-level keys, `none`), random edits of the gateway's own
value, and hypothesis text."""

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from mxgate.auth.arc import RecordedProperty, RecordedResult, _plain_results

_QUOTED = re.compile(r'"[^"]*"')
_FLAT_COMMENT = re.compile(r"\([^()\"]*\)")
_RESINFO_TOKEN = re.compile(r'\s*([A-Za-z0-9][A-Za-z0-9_.\-]*)=("[^"]*"|[A-Za-z0-9!#$%&\'*+/=?^_`{|}~.@\-]+)')
_METHOD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")
_RESULT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*")
_PTYPES = ("smtp", "header", "body", "policy")


def reference(value: str):
    """The replaced code, as it was."""
    if "\\" in value or any(c in m.group() for m in _QUOTED.finditer(value) for c in ';()'):
        return None
    text = _FLAT_COMMENT.sub(" ", value)
    if "(" in text or ")" in text or text.count('"') % 2:
        return None
    out = []
    for part in text.split(";")[1:]:
        part = part.strip()
        if part.lower() == "none":
            continue
        tokens = _RESINFO_TOKEN.findall(part)
        if not tokens or "".join(f"{k}={v}" for k, v in tokens) != "".join(part.split()):
            return None
        (method, result), props = tokens[0], []
        if not _METHOD.fullmatch(method) or not _RESULT.fullmatch(result):
            return None
        method = method.lower()
        if any(val.startswith('"') for _, val in tokens[1:-1]):
            return None
        for key, val in tokens[1:]:
            ptype, dot, name = key.partition(".")
            if not dot:
                if method == "dmarc" and key.lower() == "action":
                    continue
                return None
            if ptype.lower() not in _PTYPES or not name or "." in name or \
                    any(q.type == ptype.lower() and q.name == name.lower() for q in props):
                return None
            props.append(RecordedProperty(ptype.lower(), name.lower(), val[1:-1] if val.startswith('"') else val))
        out.append(RecordedResult(method, result.lower(), tuple(props)))
    return tuple(out) if text.count(";") else None


def same(value: str) -> bool:
    new, old = _plain_results(value), reference(value)
    assert new == old, value
    assert new is None or all(type(r) is RecordedResult and all(type(p) is RecordedProperty for p in r.properties)
                              for r in new)
    return new is not None


GATEWAY = ('gw.mxgate.test; spf=pass smtp.mailfrom=fabrikam.test smtp.helo=bench.fabrikam.test; dkim=pass '
           'header.d=fabrikam.test header.s=bench header.b="a/jO81cF"; dmarc=pass (p=none pct=100) action=none '
           'header.from=fabrikam.test')
METHODS = ["spf", "DKIM", "dmarc", "arc", "x-a", "-a", "a_b", ""]
RESULTS = ["pass", "Fail", "none", "temp_error", "-x", ""]
PROPS = ["smtp.mailfrom=a.test", "SMTP.MailFrom=b.test", "header.d=a.test", "header.b=\"x/y\"", 'header.b="a;b"',
         'header.b="(c)"', "header.from=a@b", "policy.x=1", "body.y=2", "other.z=3", "header=x", "header.=x",
         "header.a.b=x", "action=none", "ACTION=reject", "reason=\"r\"", "x=1", "header.d=", "smtp.helo=h e",
         "(comment)", "(nested (c))", '"', "\\", "header.d=a\\b", "smtp.mailfrom=a.test"]


def test_resinfo_from_hostile_pieces():
    hits = 0
    for method in METHODS:
        for result in RESULTS:
            for a in PROPS:
                for b in ("", "smtp.mailfrom=a.test", "header.d=x.test", "SMTP.mailfrom=c.test", '"q"'):
                    for tail in ("", "; none", "; spf=pass smtp.mailfrom=x", ";", "; (c) dkim=fail"):
                        hits += same(f"gw.test; {method}={result} {a} {b}{tail}")
    assert hits > 1000


def test_random_edits_of_the_gateways_value():
    rng = random.Random(19)
    alphabet = list(';()"\\= .@/\t\r\nAz09-_') + ["none", "action=", "smtp.", "header.", " (x) ", '"a"', "dmarc="]
    hits = 0
    for _ in range(30000):
        value = GATEWAY
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(value) + 1)
            value = value[:at] + rng.choice(alphabet + [""]) + value[at + rng.choice([0, 0, 1, 3]):]
        hits += same(value)
    assert hits > 3000


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(list(';()"\\= .@/\tAz09-_\u00e9\xa0') + ["none", "spf=", "dmarc=", "pass",
                                                                          "smtp.mailfrom=", "header.d=", "action="]),
                max_size=25).map("".join))
def test_any_text(value):
    same("gw.test; " + value)
    same(value)
