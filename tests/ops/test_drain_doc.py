"""docs/deployment.md, "Adding, draining and removing a node": the drain step's check that a
node's sessions have ended must work as written. The page said "`mxgate status` shows the
sessions", but status shows listeners, heartbeat and policy version, no sessions (session 10,
followed from outside); the command it names now lists an open SMTP session, and nothing once
the session is over."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import rig

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def _drain_step() -> str:
    return DOC.read_text(encoding="utf-8").split("- **Drain**:", 1)[1].split("- **Remove**", 1)[0]


def test_the_drain_steps_session_check_lists_open_sessions(node_factory):
    step = _drain_step()
    assert "mxgate status` shows the sessions" not in step
    command = re.search(r"`(ss [^`]*sport = :25 [^`]*)`", step).group(1)
    n = node_factory()
    port = n.port()

    def listed() -> str:
        return subprocess.run(["bash", "-c", command.replace("sport = :25 ", f"sport = :{port} ")], capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()

    assert listed() == ""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(512).startswith(b"220")
        assert rig.wait_until(lambda: f"127.0.0.1:{port}" in listed(), timeout=5)
        s.sendall(b"QUIT\r\n")
        assert s.recv(512).startswith(b"221")
    assert rig.wait_until(lambda: listed() == "", timeout=5)
