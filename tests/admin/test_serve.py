"""`mxgate serve` with the admin role as a real process: the first-run password is printed once
(and works), the admin answers on [admin] listen, and SIGTERM still stops the whole node
(uvicorn must not take the node's signals)."""

from __future__ import annotations

import re

import httpx

import rig
from adminkit import csrf_from


def test_serve_prints_first_password_once_and_stops_on_sigterm(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    port, admin_port = rig.free_port(), rig.free_port()
    config = tmp_path / "node.toml"
    config.write_text(f'[roles]\nmailbox = true\nadmin = true\n[mailbox]\nlisten = ["127.0.0.1:{port}"]\n'
                      f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n')
    node = rig.SubprocessNode(home, config).start(wait_for=("127.0.0.1", admin_port))
    try:
        assert rig.wait_until(lambda: "shown once" in node.log.read_text(), 5)
        password = re.search(r"with password (\S+)", node.log.read_text()).group(1)
        c = httpx.Client(base_url=f"http://127.0.0.1:{admin_port}")
        assert c.get("/healthz").text == "ok\n"
        r = c.post("/login", data={"csrf_token": csrf_from(c.get("/login").text), "username": "admin", "password": password})
        assert r.status_code == 303
        assert "Dashboard" in c.get("/").text
    finally:
        node.stop()
    assert node.proc.returncode == 0
    node.start(wait_for=("127.0.0.1", admin_port))
    node.stop()
    assert node.log.read_text().count("with password") == 1
