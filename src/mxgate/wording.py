"""English plurals for labels and counts shown to people (CLI titles, API tags, log lines).

Owns: one place for "mailbox → mailboxes", "entry → entries", so no label is spelled by
appending "s" (which gave "Mailboxs"). Leaf module: imports nothing of mxgate.
"""

from __future__ import annotations

_IRREGULAR = {"copy": "copies", "entry": "entries", "policy": "policies", "query": "queries"}


def plural(word: str) -> str:
    """The plural of the last word of `word` ("inbound connector" → "inbound connectors")."""
    head, sep, last = word.rpartition(" ")
    low = last.lower()
    if low in _IRREGULAR:
        many = _IRREGULAR[low]
        many = many.capitalize() if last[:1].isupper() else many
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        many = last + "es"
    elif low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u"):
        many = last[:-1] + "ies"
    else:
        many = last + "s"
    return head + sep + many


def count(n: int, word: str) -> str:
    """"1 entry", "2 entries", "0 entries"."""
    return f"{n} {word if n == 1 else plural(word)}"
