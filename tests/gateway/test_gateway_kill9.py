"""Issue 5, must-show 4: kill -9 of the gateway under bounded load — every message acknowledged with
250 reaches the mailbox after restart (duplicates allowed, loss not). Kills: MXGATE_GATEWAY_KILLS (default 5, the bar of adversarial.md §1 / issue 8)."""

from __future__ import annotations

import email
import os
import threading
import time

import pytest
import rig
from gwkit import gateway_policy, gateway_toml
from rig import GATEWAY, INTERNET, SubprocessNode, free_port, maildir_messages, send_message, simple_message, wait_until

from mxgate.config.home import Home

KILLS = int(os.environ.get("MXGATE_GATEWAY_KILLS", "5"))
PER_ROUND = 3  # messages acknowledged before each kill (a wait on state, not on time)
CLIENTS = 3


def _toml(port: int, mailbox, dns) -> str:
    return gateway_toml(port, f"127.0.0.1:{mailbox.port()}", mailbox.node.certs.ca_cert, dns)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill9_under_load_loses_no_acknowledged_message(tmp_path, mailbox, dns):
    home = Home.open(tmp_path / "gw")
    rig.apply_policy(home, gateway_policy())
    port = free_port(GATEWAY)
    config = tmp_path / "gw.toml"
    config.write_text(_toml(port, mailbox, dns))
    node = SubprocessNode(home.root, config).start(wait_for=(GATEWAY, port))
    acked: set[str] = set()
    lock = threading.Lock()
    counter = iter(range(10**6))

    def client(stop: threading.Event) -> None:
        while not stop.is_set():
            subject = f"k9-{next(counter)}"
            try:
                r = send_message(GATEWAY, port, source=INTERNET, sender="s@fabrikam.test", rcpts=["alice@contoso.test"],
                                 data=simple_message(subject=subject))
            except OSError:
                time.sleep(0.05)  # the gateway is down: the client retries later, as an MTA would
                continue
            if r.get("end", (0,))[0] == 250:
                with lock:
                    acked.add(subject)

    try:
        for _ in range(KILLS):
            stop = threading.Event()
            threads = [threading.Thread(target=client, args=(stop,)) for _ in range(CLIENTS)]
            before = len(acked)
            for t in threads:
                t.start()
            # Load until this round has had acknowledgements, however slow the machine is.
            assert wait_until(lambda: len(acked) >= before + PER_ROUND, timeout=90), "no progress under load"
            node.kill9()  # mid-transaction for some clients
            stop.set()
            for t in threads:
                t.join(15)
            node = SubprocessNode(home.root, config).start(wait_for=(GATEWAY, port))
        print(f"{len(acked)} messages acknowledged across {KILLS} kills")
        assert len(acked) >= KILLS * PER_ROUND

        def delivered() -> set[str]:
            return {email.message_from_bytes(m)["Subject"] for m in maildir_messages(mailbox.home, "alice@contoso.test")}

        assert wait_until(lambda: acked <= delivered(), timeout=60), sorted(acked - delivered())[:10]
    finally:
        node.stop()
