"""The background threads a node runs for its roles (issue 19: what a mailbox process starts)."""

from __future__ import annotations

import pytest

import rig
from mxgate.server.node import shares_state


@pytest.mark.parametrize("roles,expected", [
    ({"mailbox": True, "gateway": False, "submission": False, "admin": False}, False),
    ({"mailbox": True, "gateway": True, "submission": False, "admin": False}, True),
    ({"mailbox": True, "gateway": False, "submission": True, "admin": False}, True),
    ({"mailbox": True, "gateway": False, "submission": False, "admin": True}, True),
    ({"mailbox": False, "gateway": True, "submission": False, "admin": False}, True),
])
def test_only_roles_that_share_state_need_the_cluster_sync(tmp_path, roles, expected):
    assert shares_state(rig.node_settings(tmp_path, roles=roles)) is expected


def test_a_mailbox_only_node_runs_no_cluster_sync_thread_and_still_delivers(node_factory, tmp_path):
    n = node_factory()  # rig.node_settings: the mailbox role alone (every mailbox worker process)
    assert n.node.cluster is not None and n.node.cluster._thread is None
    r = rig.send_message("127.0.0.1", n.port(), source="127.0.0.10", sender="sender@fabrikam.test",
                         rcpts=["alice@contoso.test"], data=rig.simple_message("no sync"))
    assert r["end"][0] == 250
    assert len(rig.maildir_messages(n.home, "alice@contoso.test")) == 1


def test_the_admin_role_still_shares_its_login_counts(node_factory):
    n = node_factory(roles={"admin": True}, admin={"listen": f"127.0.0.1:{rig.free_port()}"})
    thread = n.node.cluster._thread
    assert thread is not None and thread.is_alive() and thread.name == "cluster-sync"
