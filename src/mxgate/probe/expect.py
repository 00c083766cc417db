"""`--expect`: what the admin says should happen, and whether it did.

Owns: the grammar `accept | reject[:CODE][@STAGE] | tempfail[:CODE][@STAGE]` and the pure
comparison of an `Expectation` with a `ProbeResult`. CODE is a basic reply code (`550`,
RFC 5321 §4.2) or an enhanced status code (`5.7.51`, RFC 3463); STAGE is where the refusal
must happen.

Must not know: sockets, clocks or printing. `judge` reads only the result it is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mxgate.probe.client import ProbeResult

Kind = Literal["accept", "reject", "tempfail"]
STAGES = ("connect", "ehlo", "starttls", "mail", "rcpt", "data")
# RFC 5321 §4.2: reply codes are three digits, first 2-5; refusals are 4yz (transient) or 5yz.
BASIC_CODE = re.compile(r"^[45][0-9][0-9]$")
# RFC 3463 §2: class "." subject "." detail; subject and detail 1-3 digits.
ENHANCED_CODE = re.compile(r"^[45]\.[0-9]{1,3}\.[0-9]{1,3}$")
_GRAMMAR = re.compile(r"^(?P<kind>[a-z]+)(?::(?P<code>[0-9.]+))?(?:@(?P<stage>[a-z]+))?$")
_CLASS_FOR_KIND = {"reject": "5", "tempfail": "4"}


class ExpectationError(ValueError):
    """The --expect text does not follow the grammar; the message says what is wrong."""


@dataclass(frozen=True)
class Expectation:
    kind: Kind
    code: int | None = None  # basic code, e.g. 550
    enhanced: str | None = None  # e.g. "5.7.51"
    stage: str | None = None

    def __str__(self) -> str:
        code = f":{self.code}" if self.code is not None else f":{self.enhanced}" if self.enhanced else ""
        return f"{self.kind}{code}{'@' + self.stage if self.stage else ''}"


def parse_expect(text: str) -> Expectation:
    """Parse `--expect`; raise ExpectationError naming the bad part."""
    m = _GRAMMAR.match(text.strip().lower())
    if m is None:
        raise ExpectationError(
            f"cannot parse {text!r}: use accept | reject[:CODE][@STAGE] | tempfail[:CODE][@STAGE]")
    kind, code, stage = m.group("kind"), m.group("code"), m.group("stage")
    if kind not in ("accept", "reject", "tempfail"):
        raise ExpectationError(f"unknown outcome {kind!r}: use accept, reject or tempfail")
    if kind == "accept" and (code or stage):
        raise ExpectationError("accept takes no code or stage")
    if stage is not None and stage not in STAGES:
        raise ExpectationError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
    if code is None:
        return Expectation(kind, stage=stage)
    if not (BASIC_CODE.match(code) or ENHANCED_CODE.match(code)):
        raise ExpectationError(f"bad code {code!r}: use a reply code like 550 or an enhanced code like 5.7.51")
    if code[0] != _CLASS_FOR_KIND[kind]:
        other = "tempfail" if kind == "reject" else "reject"
        raise ExpectationError(f"{kind} codes start with {_CLASS_FOR_KIND[kind]}; did you mean {other}:{code}?")
    if "." in code:
        return Expectation(kind, enhanced=code, stage=stage)
    return Expectation(kind, code=int(code), stage=stage)


def judge(exp: Expectation, result: ProbeResult) -> tuple[bool, str]:
    """(matched, one-line explanation). Every differing part is named, first the outcome."""
    got = describe(result)
    if result.outcome != exp.kind:
        return False, f"expected {exp}, got {got}"
    problems = []
    if exp.stage is not None and result.stage != exp.stage:
        problems.append(f"stage {result.stage} instead of {exp.stage}")
    if exp.code is not None and result.code != exp.code:
        problems.append(f"code {result.code} instead of {exp.code}")
    if exp.enhanced is not None and result.enhanced != exp.enhanced:
        problems.append(f"enhanced code {result.enhanced or 'none'} instead of {exp.enhanced}")
    if problems:
        return False, f"expected {exp}, got {got}: {'; '.join(problems)}"
    return True, f"as expected: {got}"


def describe(result: ProbeResult) -> str:
    """A compact name for what happened, in the same grammar as --expect where possible."""
    if result.outcome == "accept":
        return "accept"
    if result.outcome == "error":
        return f"error@{result.stage} ({result.reply})"
    code = f":{result.code}" if result.code is not None else ""
    enhanced = f" {result.enhanced}" if result.enhanced else ""
    return f"{result.outcome}{code}@{result.stage}{enhanced}"
