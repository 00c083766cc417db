"""Where the running nodes of this user keep their homes, for the hint of a command pointed at
the wrong directory (issue 20: `mxgate trace` next to a running demo looked in ./mxgate-data).

Owns: reading /proc (Linux) for this user's `mxgate serve` / `mxgate demo` processes and the
home each uses — its `--home` / `--demo-home` argument, else MXGATE_HOME, else the default —
resolved against that process's working directory. Best effort: anything unreadable is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from mxgate.config.home import DEFAULT_HOME

DEMO_HOME = "./mxgate-demo"
_VERBS = {"serve": ("--home", DEFAULT_HOME), "demo": ("--demo-home", DEMO_HOME)}


def home_of(argv: list[str], environ: dict[str, str], cwd: Path) -> Path | None:
    """The home a `mxgate serve|demo` command line uses; None for any other command. Pure."""
    words = [a for a in argv[1:] if not a.startswith("-")]
    if not any(Path(a).name == "mxgate" or a == "mxgate" for a in argv[:3]):
        return None
    verb = next((w for w in words if w in _VERBS), None)
    if verb is None:
        return None
    option, default = _VERBS[verb]
    value = None
    for i, a in enumerate(argv):
        if a == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif a.startswith(option + "="):
            value = a.split("=", 1)[1]
    if value is None and verb == "serve":
        value = environ.get("MXGATE_HOME")
    path = Path(value or default)
    return (path if path.is_absolute() else cwd / path).resolve()


def running_homes(proc: Path = Path("/proc")) -> list[Path]:
    homes: list[Path] = []
    uid = os.getuid()
    try:
        pids = [p for p in proc.iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    except OSError:
        return []
    for p in pids:
        try:
            if p.stat().st_uid != uid:
                continue
            argv = [a.decode(errors="replace") for a in (p / "cmdline").read_bytes().split(b"\0") if a]
            if "mxgate" not in " ".join(argv):
                continue
            env = dict(e.decode(errors="replace").partition("=")[::2]
                       for e in (p / "environ").read_bytes().split(b"\0") if b"=" in e)
            # `python3 -m mxgate serve` names the module, not a script: treat it as the program name.
            if len(argv) > 2 and argv[1] == "-m" and argv[2] == "mxgate":
                argv = ["mxgate"] + argv[3:]
            home = home_of(argv, env, Path(os.readlink(p / "cwd")))
        except (OSError, ValueError):
            continue
        if home is not None and home.is_dir() and home not in homes:
            homes.append(home)
    return homes
