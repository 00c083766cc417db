"""The README's settings reference is generated from the schema and must not go stale, and its
Quick start works as written on a stock Debian Python (issue 20)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_settings_reference_is_current():
    spec = importlib.util.spec_from_file_location("settings_reference", ROOT / "scripts" / "settings_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert module.render(readme) == readme, "run: python3 scripts/settings_reference.py"


def quick_start_commands(readme: str) -> list[str]:
    """The command lines of the README's Quick start, in order (the ```sh blocks)."""
    quick = readme.split("## Quick start", 1)[1].split("To run a node of your own", 1)[0]
    blocks = [b for i, b in enumerate(quick.split("```")) if i % 2 == 1]
    return [line for b in blocks for line in b.splitlines() if line.strip() and not line.startswith("sh")]


def test_quick_start_has_exactly_two_commands():
    commands = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) == 2 and commands[1] == "bash scripts/test.sh"
    # PEP 668: Debian's Python refuses `pip install` outside a virtual environment.
    assert commands[0].startswith("python3 -m venv .venv && .venv/bin/pip install . && "), commands[0]
    assert "pip install" not in commands[0].replace(".venv/bin/pip install", "")


DEBIAN_PYTHON = Path("/usr/bin/python3")
# A small, fast test file for the README's test command: the suite itself is not the point here,
# and this file (tests/test_readme.py) must not be selected, or the test would run itself again.
SMALL_TEST = "tests/policy/test_ipset.py"
DEMO_UP = "The node keeps running"


def _clean_env(bin_dir: Path) -> dict[str, str]:
    """A newcomer's shell: `python3` is Debian's, nothing of this test run's Python leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MXGATE_HOME", "MXGATE_CONFIG", "PYTEST_ADDOPTS")
           and not k.startswith("PYTEST_")}
    env["PATH"] = f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"
    return env


def _run_until(cmd: str, cwd: Path, env: dict, marker: str, deadline: float, while_up=None) -> tuple[int | None, str]:
    """Start `cmd` in bash; when its output shows `marker`, call `while_up(output so far)`, then stop
    it with Ctrl-C, as the README says; or return when it exits. Output is read by a thread; the
    wait is on that event."""
    proc = subprocess.Popen(["bash", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen, lines = threading.Event(), []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if marker in line:
                seen.set()
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    up = seen.wait(deadline)
    if up and while_up is not None and proc.poll() is None:
        while_up("".join(lines))
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert up, "".join(lines)[-3000:]
    return proc.returncode, "".join(lines)


@pytest.mark.timeout(1200)
def test_readme_commands_work_on_debian_python_in_a_fresh_clone(tmp_path):
    """Issue 20: the Quick start's two commands, exactly as written, with Debian's own (PEP 668,
    externally managed) Python, in a fresh clone of the committed tree: the demo runs, the test
    command runs (one small test file), and the clone has nothing untracked afterwards."""
    assert DEBIAN_PYTHON.exists(), "Debian's /usr/bin/python3 is needed (apt-get install python3 python3-venv)"
    stdlib = subprocess.run([str(DEBIAN_PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert (Path(stdlib) / "EXTERNALLY-MANAGED").exists(), f"{DEBIAN_PYTHON} is not an externally managed Python"
    commands = quick_start_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    clone = tmp_path / "mxgate"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(DEBIAN_PYTHON)
    env = _clean_env(bin_dir)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    printed = {}

    def while_up(out: str) -> None:
        # The commands the demo prints work as printed, from another directory, while it runs.
        line = next(x for x in out.splitlines() if x.strip().startswith("message trace:"))
        cmd = line.split(":", 1)[1].strip()
        printed["trace"] = subprocess.run(["bash", "-c", cmd], cwd=elsewhere, env=env, capture_output=True,
                                          text=True, timeout=120)

    code, out = _run_until(commands[0], clone, env, DEMO_UP, deadline=600, while_up=while_up)
    assert "All steps behaved as the guide says." in out, out[-3000:]
    trace = printed["trace"]
    assert trace.returncode == 0 and "Rejected" in trace.stdout and "Delivered" in trace.stdout, trace.stdout + trace.stderr
    assert list(elsewhere.iterdir()) == []
    assert (clone / ".venv" / "bin" / "mxgate").exists()
    base = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c", "import sys; print(sys.base_prefix)"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert base == "/usr", base  # the venv stands on Debian's Python

    test_cmd = f"{commands[1]} {SMALL_TEST}"
    proc = subprocess.run(["bash", "-c", test_cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "test_readme" not in proc.stdout
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    assert status == "", f"left untracked or changed in the clone:\n{status}"


def _sh_blocks(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for i, b in enumerate(text.split("```")) if i % 2 == 1 and b.startswith("sh")
            for line in b.splitlines()[1:] if line.strip()]


def test_operations_install_and_upgrade_stand_on_a_virtual_environment():
    """docs/operations.md said `python3 -m pip install .` to install the service and
    `python3 -m pip install --upgrade mxgate` to upgrade it. On the Debian/Ubuntu Python the README
    names, the first is refused (PEP 668, externally managed), and the second asks an index for a
    package named mxgate that none has (session 10, followed from outside). Like the README's
    Quick start, every pip goes through a virtual environment's own pip, from the checkout."""
    lines = _sh_blocks((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))
    pips = [line for line in lines if "pip install" in line]
    assert pips, "the install and upgrade steps name pip"
    for line in pips:
        for part in (p.strip() for p in line.split("&&")):
            if "pip install" in part:
                assert re.fullmatch(r"\S+/bin/pip install (--upgrade )?\.", part), part
    venv = re.search(r"python3 -m venv (\S+)", " ".join(lines))
    assert venv, "the install step makes the virtual environment"
    assert all(part.strip().startswith(venv.group(1) + "/bin/pip") for line in pips for part in line.split("&&")
               if "pip" in part)
