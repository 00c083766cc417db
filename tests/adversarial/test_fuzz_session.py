"""adversarial.md §8: random SMTP command streams against a live listener.

The server never raises an unhandled exception (no 451 "Local error" from a crash, no dropped
listener) and keeps serving other sessions. `FUZZ_EXAMPLES=5000 scripts/fuzz.sh` runs longer."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rig
from rig import GATEWAY, RawSMTP

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))

verbs = st.sampled_from(["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "STARTTLS",
                         "AUTH", "BDAT", "XCLIENT", "PROXY", "HELP", ".", ""])
args = st.one_of(st.just(""), st.sampled_from(["<a@contoso.test>", "<>", "<alice@contoso.test> SIZE=10", "x.test",
                                               "<@a:b@c>", "<a@[1.2.3.4]>", "PLAIN AAAA", "<\"q\"@contoso.test>"]),
                 st.text(max_size=40))
line = st.builds(lambda v, a, end: (v + (" " if a and not v.endswith(":") else "") + a).encode("utf-8", "surrogatepass") + end,
                 verbs, args, st.sampled_from([b"\r\n", b"\n", b"\r", b""]))
stream = st.lists(st.one_of(line, st.binary(max_size=64)), min_size=1, max_size=25)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory):
    from mxgate.config.home import Home

    tmp = tmp_path_factory.mktemp("fuzz")
    h = Home.open(tmp / "home")
    rig.apply_policy(h, rig.GUIDE_POLICY)
    settings_ = rig.node_settings(tmp, mailbox={"limits": {"command_timeout": 2.0, "max_connections_per_ip": 100}})
    n = rig.InProcessNode(settings_, h).start()
    yield n
    n.stop()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream)
def test_random_command_streams(fuzz_node, parts):
    with RawSMTP("127.0.0.1", fuzz_node.port(), rig.INTERNET, timeout=3) as c:
        c.greeting()
        try:
            for p in parts:
                c.send(p)
            c.send(b"\r\nQUIT\r\n")
            data = b""
            c.sock.settimeout(1.0)
            while True:
                chunk = c.sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            data = b""
    assert b"Local error in processing (trace id" not in data  # an unhandled exception would say so
    # The listener still serves a well-behaved client.
    with RawSMTP("127.0.0.1", fuzz_node.port(), GATEWAY, timeout=3) as ok:
        assert ok.greeting()[0] == 220
        assert ok.cmd("NOOP")[0] == 250
