"""Issue 17: the CLI never interprets wire data. Senders, recipients, subjects and remote replies
are printed with Rich markup and terminal control characters escaped — one helper
(cli/common.terminal_safe) behind every printer (SafeConsole, print_table, echo)."""

from __future__ import annotations

import re

from mxgate.cli.common import terminal_safe
from mxgate.config.home import Home
from mxgate.store.db import open_engine
from mxgate.trace.store import TraceRecord, TraceStore

CRASHER = '"[/]"@e.test'  # a valid quoted local part; Rich reads "[/]" as a closing tag
LINK = "[link=https://evil.example/login]support[/link]@e.test"
ESC = "Invoice \x1b]0;owned\x07\x1b[2J\x1b[31mred\x9b1m"


def _seed(home_dir) -> int:
    home = Home.open(home_dir)
    engine = open_engine(home.database_url)
    store = TraceStore(engine)
    store.record(TraceRecord(trace_id="t1", status="Rejected", sender=CRASHER, recipient=LINK, subject=ESC,
                             reason="", from_ip="192.0.2.1", detail={"reply": "550 \x1b[5mblink"},
                             events=[(1.0, "Reject", f"at rcpt: {ESC}")]))
    store.flush()
    return store.search(limit=1)[0]["id"]


def _assert_literal(output: str) -> None:
    # (a table may fold the long recipient across two lines; the markup must still be there)
    assert CRASHER in output and "[link=https://evil.example/login]support[/link" in output
    assert "\x1b" not in output and "\x07" not in output and "\x9b" not in output
    assert "\\x1b]0;owned\\x07" in output and "\\x9b1m" in output


def test_trace_search_and_show_print_wire_data_literally(run):
    row_id = _seed(run.home)
    r = run("trace", "--since", "2000-01-01")
    assert r.exit_code == 0, r.output
    _assert_literal(r.output)
    r = run("trace", "show", str(row_id))
    assert r.exit_code == 0, r.output
    _assert_literal(r.output)
    assert "550 \\x1b[5mblink" in r.output


def test_terminal_safe_keeps_text_and_escapes_controls():
    assert terminal_safe("Grüße [b]x[/b]\tok\n") == "Grüße [b]x[/b]\tok\n"
    assert terminal_safe("\x00\x1b\x7f\x85") == "\\x00\\x1b\\x7f\\x85"
    assert terminal_safe(None) == ""


def test_every_cli_printer_goes_through_the_helper():
    """No command module prints with Rich markup or bare typer.echo/print of non-JSON text."""
    from pathlib import Path

    import mxgate.cli as cli

    for path in Path(cli.__file__).parent.glob("*.py"):
        if path.name == "common.py":
            continue
        text = path.read_text()
        assert not re.search(r"\bConsole\(|\bTable\(|(?<![\w.])print\(", text), path.name
        for m in re.finditer(r"typer\.echo\((.*)", text):
            assert m.group(1).startswith("json.dumps("), (path.name, m.group(0))
