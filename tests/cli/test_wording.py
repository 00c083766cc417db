"""Issue 22, point 5 (CLI wording): list titles use real plurals ("Mailboxes", not "Mailboxs"),
counts agree with their noun, and `mxgate queue --spool X list` is titled with the queue it shows."""

from __future__ import annotations

import re

import pytest

from mxgate.wording import count, plural


@pytest.mark.parametrize("word, many", [("mailbox", "mailboxes"), ("entry", "entries"), ("copy", "copies"),
                                        ("inbound connector", "inbound connectors"), ("accepted domain", "accepted domains"),
                                        ("address", "addresses"), ("key", "keys")])
def test_plural(word, many):
    assert plural(word) == many
    assert count(1, word) == f"1 {word}" and count(2, word) == f"2 {many}" and count(0, word) == f"0 {many}"


def _title(output: str) -> str:
    return output.strip().splitlines()[0].strip()


@pytest.mark.parametrize("noun, title", [("mailbox", "Mailboxes"), ("domain", "Accepted domains")])
def test_list_titles_are_real_plurals(run, noun, title):
    assert run("domain", "new", "contoso.test").exit_code == 0
    assert run("mailbox", "new", "alice@contoso.test").exit_code == 0
    r = run(noun, "list")
    assert r.exit_code == 0, r.output
    assert _title(r.stdout) == title, r.stdout


def test_connector_list_titles(run):
    assert _title(run("connector", "list").stdout) == "Inbound connectors"
    assert _title(run("connector", "list", "--outbound").stdout) == "Outbound connectors"


@pytest.mark.parametrize("spool", ["gateway", "gateway-outbound", "outbound"])
def test_queue_list_is_titled_with_the_spool_it_shows(run, spool):
    r = run("queue", "--spool", spool, "list")
    assert r.exit_code == 0, r.output
    title = _title(r.stdout)
    assert re.fullmatch(rf"{re.escape(spool)} queue \(spool/{re.escape(spool)}\): 0 entries", title), title


def test_no_naive_plurals_left_in_the_sources():
    """`word + "s"` made "Mailboxs"; the one plural helper is mxgate.wording."""
    from pathlib import Path

    import mxgate

    root = Path(mxgate.__file__).parent
    offenders = []
    for path in [*root.rglob("*.py"), *root.rglob("*.html")]:
        if path.name == "wording.py":
            continue
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"""(\w\s*\+\s*["']s["'])|(\{(?:human|noun|kind|word)\}s\b)|(\}\}s\b)""", text):
            offenders.append(f"{path.relative_to(root)}: {m.group(0)}")
    assert offenders == []
