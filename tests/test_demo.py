"""Issue 7 must-show 3: `mxgate demo` runs from a fresh checkout within a minute, and every step
it narrates is a real SMTP session whose reply it prints."""

from __future__ import annotations

import subprocess
import sys
import time


def test_demo_tells_the_whole_story(tmp_path):
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "mxgate", "demo", "--demo-home", str(tmp_path / "demo")],
                       capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert r.returncode == 0, "\n".join(line for line in r.stdout.splitlines() if "✘" in line or "Step" in line) + r.stderr[-2000:]
    assert elapsed < 60
    out = r.stdout
    assert out.count("── Step") == 7 and "✘" not in out and out.count("✔") >= 7
    assert "550 5.7.51 TenantInboundAttribution" in out  # the refusal, as the server sent it
    assert "250 2.0.0 OK: queued" in out and "250 2.0.0 OK: delivered" in out
    assert out.count("SMTP session from") >= 5
    assert "spf=pass (sender IP is 127.0.0.77)" in out
    assert "PASS    bypass 'Third-party filter service' from 127.0.0.66" in out
    assert (tmp_path / "demo" / "maildir" / "bob@contoso.test" / "new").exists()


def test_demo_refuses_to_wipe_a_foreign_directory(tmp_path):
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep me")
    r = subprocess.run([sys.executable, "-m", "mxgate", "demo", "--demo-home", str(foreign)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "not a demo home" in (r.stdout + r.stderr)
    assert (foreign / "data.txt").read_text() == "keep me"
