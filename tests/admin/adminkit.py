"""Helpers for the admin centre tests: a node with the admin role, logged-in HTTP clients."""

from __future__ import annotations

import re

import httpx

import rig
from mxgate.admin import auth

PASSWORD = "correct horse battery staple"
POLICY_NO_CONNECTOR = rig.GUIDE_POLICY.split("[[inbound_connector]]")[0]


def start_admin_node(node_factory, policy: str | None = rig.GUIDE_POLICY, **sections):
    """A running node with the mailbox and admin roles; the admin password is PASSWORD."""
    admin = {"listen": f"127.0.0.1:{rig.free_port()}"} | sections.pop("admin", {})
    n = node_factory(policy, roles={"admin": True}, admin=admin, **sections)
    auth.set_password(n.node.engine, "admin", PASSWORD)
    n.admin_url = f"http://{admin['listen']}"
    return n


def csrf_from(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(base_url: str, password: str = PASSWORD, ip_header: dict | None = None) -> httpx.Client:
    c = httpx.Client(base_url=base_url, timeout=10)
    token = csrf_from(c.get("/login").text)
    r = c.post("/login", data={"csrf_token": token, "username": "admin", "password": password, "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    c.csrf = csrf_from(c.get("/").text)
    return c


def api_client(node) -> httpx.Client:
    _info, token = auth.new_token(node.node.engine, "tests")
    return httpx.Client(base_url=node.admin_url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10)
