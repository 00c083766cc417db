"""logs.redact skips the regex for an ASCII line without a secret word: its output must be the
regex's own on any line (log lines carry sender-chosen text: HELO, addresses, AUTH payloads)."""

from __future__ import annotations

import random
import re

from hypothesis import given, settings, strategies as st

from mxgate.logs import redact

# The redaction as it was: the regex over every line.
REFERENCE = re.compile(r"(?i)(password|passwd|secret|token|auth plain|auth login)([=: ]+)(\S+)")

WORDS = ["password", "passwd", "secret", "token", "auth plain", "auth login", "pass", "secre", "tok", "auth",
         "authplain", "auth  login", "pa\u017fsword", "to\u212aen", "\u017fecret", "SECRET", "PassWD", "ToKeN"]
GLUE = ["=", ": ", " ", "", "==", " : ", "\t", "-"]
VALUES = ["hunter2", "", " ", "x y", "[redacted]", "caf\u00e9", "\u017f", "\\1"]
FILLER = ["session 1 from 192.0.2.1", "AUTH PLAIN", "user u@example.org", "message ABC relayed", " ", "\u00e9"]


def random_line(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(0, 6)):
        word = rng.choice(WORDS)
        word = "".join(c.upper() if rng.random() < 0.3 else c for c in word)
        parts.append(rng.choice(FILLER) + " " + word + rng.choice(GLUE) + rng.choice(VALUES))
    return " ".join(parts)


def test_random_lines_match_the_regex():
    rng = random.Random(19)
    for _ in range(20_000):
        line = random_line(rng)
        assert redact(line) == REFERENCE.sub(r"\1\2[redacted]", line), line


def test_unicode_case_folding_is_redacted():
    # IGNORECASE matches LONG S to s and KELVIN SIGN to k: such a line must not skip the regex.
    assert redact("pa\u017fsword: hunter2") == "pa\u017fsword: [redacted]"
    assert redact("to\u212aen=abc") == "to\u212aen=[redacted]"
    assert redact("AUTH Login dXNlcg==") == "AUTH Login [redacted]"


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet="PASWORDECTKNULIGpaswordectknulig \u017f\u212a=:\t-x\u00e9", max_size=60))
def test_hypothesis_lines_match_the_regex(line):
    assert redact(line) == REFERENCE.sub(r"\1\2[redacted]", line)
