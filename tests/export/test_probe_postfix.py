"""Issue 7, must-show 1 (Postfix half): `mxgate probe` against a real Postfix on a loopback port —
--expect at RCPT, TLS details, source-address binding, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import rig
from rig import ATTACKER, GATEWAY


def probe(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(rig.REPO / "src")}
    return subprocess.run([sys.executable, "-m", "mxgate", "probe", *args], capture_output=True, text=True, timeout=60, env=env)


def test_probe_against_postfix(exported_postfix, test_ca):
    pf = exported_postfix().start()
    target = f"127.0.0.1:{pf.port}"
    common = ["--from", "ceo@fabrikam.test", "--to", "alice@contoso.test", "--ca", test_ca["ca"], "--tls-name", "localhost"]

    bypass = probe(target, *common, "--source-address", ATTACKER, "--expect", "reject:5.7.51@rcpt", "--json")
    assert bypass.returncode == 0, bypass.stdout + bypass.stderr
    data = json.loads(bypass.stdout)
    assert data["outcome"] == "reject" and data["stage"] == "rcpt" and data["code"] == 550
    assert data["tls"]["verified"] is True and data["tls"]["version"].startswith("TLSv1.")
    # Postfix saw the bound source address, not 127.0.0.1.
    assert f"RCPT from unknown[{ATTACKER}]" in pf.instance.log_tail()

    wrong = probe(target, *common, "--source-address", ATTACKER, "--expect", "accept")
    assert wrong.returncode == 1 and "FAIL" in wrong.stdout

    gateway = probe(target, *common, "--source-address", GATEWAY, "--starttls", "require", "--expect", "accept")
    assert gateway.returncode == 0, gateway.stdout
    assert "TLS TLSv1." in gateway.stdout and "issued by" in gateway.stdout

    clear = probe(target, *common, "--source-address", GATEWAY, "--starttls", "off", "--expect", "reject:530@mail")
    assert clear.returncode == 0, clear.stdout

    usage = probe(target, "--expect", "reject:250")
    assert usage.returncode == 2
