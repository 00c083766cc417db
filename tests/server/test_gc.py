"""The node's garbage collector settings (issue 19): a started node has frozen its start-up heap
and collects the young generation at GC_YOUNG_THRESHOLD, which is safe only because the message,
refusal and session paths make no reference cycles (a cycle per message would then wait for
10,000 objects before it is freed). Checked with gc.DEBUG_SAVEALL over real SMTP traffic."""

from __future__ import annotations

import gc
import weakref

import pytest

import rig
from gckit import cycle_garbage, not_the_stdlib_transports, summary
from rig import GATEWAY, INTERNET, RawSMTP
from mxgate.server import node as node_module


def _session(port: int, messages: int, refused: int) -> None:
    with RawSMTP("127.0.0.1", port, GATEWAY) as c:
        assert c.greeting()[0] == 220
        c.cmd("EHLO gw.test")
        assert c.starttls()[0] == 220
        c.cmd("EHLO gw.test")
        for i in range(messages):
            c.send(b"MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<alice@contoso.test>\r\nDATA\r\n")
            assert [c.read_reply()[0] for _ in range(3)] == [250, 250, 354]
            c.send(rig.simple_message(f"cycle check {i}") + b".\r\n")
            code, text = c.read_reply()
            assert code == 250, text
        for _ in range(refused):  # a recipient outside the accepted domains: refused at RCPT
            assert c.cmd("MAIL FROM:<sender@fabrikam.test>")[0] == 250
            assert c.cmd("RCPT TO:<x@elsewhere.example>")[0] == 550
            assert c.cmd("RSET")[0] == 250
        c.cmd("QUIT")


def test_a_started_node_froze_its_heap_and_collects_young_objects_at_the_node_threshold(node_factory, dns):
    saved = gc.get_threshold()
    gc.set_threshold(700, *saved[1:])  # CPython's default: the node must be the one that moves it
    gc.unfreeze()
    try:
        node_factory(dns={"servers": [dns.address]})
        assert gc.get_threshold()[0] == getattr(node_module, "GC_YOUNG_THRESHOLD", 700) > 700
        assert gc.get_threshold()[1:] == saved[1:]
        assert gc.get_freeze_count() > 10_000  # the modules and the compiled policy, out of the collector's walk
    finally:
        gc.set_threshold(*saved)


def test_start_up_garbage_is_collected_before_the_heap_is_frozen(node_factory, dns):
    """A cycle left unreachable before start() would otherwise sit in the permanent generation."""
    class Leak:
        pass

    a, b = Leak(), Leak()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    gc.disable()  # no automatic collection during start(): only the node's own collect may free it
    try:
        node_factory(dns={"servers": [dns.address]})
    finally:
        gc.enable()
    assert gone() is None


@pytest.fixture
def uvloop_node(tmp_path, dns):
    """A mailbox node on uvloop, as `mxgate serve` runs (the loop set on the node alone: the
    process's event loop policy is left as the other tests expect it)."""
    import uvloop

    from mxgate.config.home import Home

    home = Home.open(tmp_path / "uvnode")
    rig.apply_policy(home, rig.GUIDE_POLICY)
    n = rig.InProcessNode(rig.node_settings(tmp_path, dns={"servers": [dns.address]}), home)
    n.loop.close()
    n.loop = uvloop.new_event_loop()
    n.start()
    n.home = home
    yield n
    n.stop()


def _traffic(n) -> list:
    port = n.port()
    _session(port, 3, 1)  # warm: lazy imports, caches, the trace writer's first batch

    def traffic():
        for _ in range(4):
            _session(port, 5, 2)
        assert rig.wait_until(lambda: len(rig.maildir_messages(n.home, "alice@contoso.test")) == 23, 20)
        assert n.trace.flush(timeout=5)  # the trace rows written: their batch is part of the path

    return cycle_garbage(traffic)


def test_messages_refusals_and_sessions_make_no_reference_cycles(uvloop_node):
    garbage = _traffic(uvloop_node)
    assert not garbage, summary(garbage)


def test_on_the_standard_loop_too_only_its_transport_cycle_remains(node_factory, dns):
    garbage = not_the_stdlib_transports(_traffic(node_factory(dns={"servers": [dns.address]})))
    assert not garbage, summary(garbage)


def test_a_session_refused_at_connect_makes_no_reference_cycles(uvloop_node):
    port = uvloop_node.port()

    def refused_sessions():
        for _ in range(10):  # not the gateway address: an Internet client at the locked-down mailbox
            with RawSMTP("127.0.0.1", port, INTERNET) as c:
                code, _ = c.greeting()
                if code == 220:
                    c.cmd("EHLO client.test")
                    c.cmd("MAIL FROM:<s@fabrikam.test>")
                    c.cmd("RCPT TO:<alice@contoso.test>")
                    c.cmd("QUIT")

    refused_sessions()
    garbage = cycle_garbage(refused_sessions)
    assert not garbage, summary(garbage)
