"""`mxgate service unit` and `mxgate service install`: the systemd unit shipped in
src/mxgate/examples/mxgate.service, filled in for this machine (docs/operations.md)."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import typer

from mxgate.cli.common import fail, handle_errors, home_option, out

MODES = ("capabilities", "root")
# Below these, systemd's ProtectHome=yes would hide the interpreter or the home: read-only instead.
_HOME_TREES = ("/home", "/root", "/run/user")


def register(app: typer.Typer) -> None:
    service_app = typer.Typer(help="Run the node as a systemd service.", no_args_is_help=True)
    service_app.command("unit")(unit)
    service_app.command("install")(install)
    app.add_typer(service_app, name="service")


def render_unit(*, home: str, config: str, user: str, group: str, mode: str = "capabilities",
                python: str = sys.executable, stop_timeout: int = 90) -> str:
    """The shipped template with this machine's paths, keeping the block of one start mode:
    "capabilities" (systemd starts the account with CAP_NET_BIND_SERVICE; the default) or
    "root" (started as root, the node binds and drops to [node] user itself)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    text = resources.files("mxgate.examples").joinpath("mxgate.service").read_text(encoding="utf-8")
    lines, keep = [], True
    for line in text.splitlines():
        if line.startswith("#mode "):
            keep = line.split()[1].rstrip(":") == mode
            continue
        if line == "#end":
            keep = True
            continue
        if keep:
            lines.append(line)
    below_home = any(Path(p).is_relative_to(t) for p in (python, home, config) for t in _HOME_TREES)
    values = {"@PYTHON@": python, "@HOME@": home, "@CONFIG@": config, "@USER@": user, "@GROUP@": group or user,
              "@STOP_TIMEOUT@": str(stop_timeout)}
    body = "\n".join(lines) + "\n"
    for key, value in values.items():
        body = body.replace(key, value)
    if below_home:
        body = body.replace("ProtectHome=yes", "ProtectHome=read-only")
    return body


DEFAULT_HOME = "/var/lib/mxgate"
def stop_timeout_for(config: str) -> int:
    """TimeoutStopSec: the config's [node] shutdown_grace (sessions finishing) plus time to close the
    store and workers, so systemd never kills the node while a session may still be in DATA."""
    from mxgate.config.node import NodeSection, load_settings

    grace = NodeSection().shutdown_grace
    if Path(config).is_file():
        grace = load_settings(config).node.shutdown_grace
    return int(grace) + 60


_config_opt = typer.Option("/etc/mxgate/node.toml", "--config", help="node.toml the service runs with")
_user_opt = typer.Option("mxgate", "--user", help="account the node runs as")
_group_opt = typer.Option("", "--group", help="group; default: the account's primary group")
_mode_opt = typer.Option("capabilities", "--mode", help="capabilities (started as the account with CAP_NET_BIND_SERVICE) "
                                                         "or root (started as root, drops to --user after binding)")


@handle_errors
def unit(config: str = _config_opt, user: str = _user_opt, group: str = _group_opt,
         mode: str = _mode_opt):
    """Print the systemd unit for this machine (the home is --home, default /var/lib/mxgate)."""
    home = home_option() or DEFAULT_HOME
    if mode not in MODES:
        raise fail(f"--mode must be one of {', '.join(MODES)}", 2)
    out.file.write(render_unit(home=str(Path(home).absolute()), config=str(Path(config).absolute()), user=user,
                               group=group, mode=mode, stop_timeout=stop_timeout_for(config)))


@handle_errors
def install(path: Path = typer.Option(Path("/etc/systemd/system/mxgate.service"), "--path", help="where to write the unit"),
            config: str = _config_opt, user: str = _user_opt, group: str = _group_opt,
            mode: str = _mode_opt):
    """Write the systemd unit, create the home (--home, default /var/lib/mxgate) for the account, say what next."""
    import pwd

    home = home_option() or DEFAULT_HOME

    if mode not in MODES:
        raise fail(f"--mode must be one of {', '.join(MODES)}", 2)
    home_path, config_path = Path(home).absolute(), Path(config).absolute()
    text = render_unit(home=str(home_path), config=str(config_path), user=user, group=group, mode=mode,
                       stop_timeout=stop_timeout_for(str(config_path)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    out.print(f"wrote {path}", markup=False)
    notes = []
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        notes.append(f"create the account first: useradd --system --home-dir {home_path} --shell /usr/sbin/nologin {user}")
        account = None
    # ReadWritePaths= needs the home to exist; the account must own it (capabilities mode).
    home_path.mkdir(parents=True, exist_ok=True)
    if account is not None and os.geteuid() == 0:
        os.chown(home_path, account.pw_uid, account.pw_gid)
        os.chmod(home_path, 0o750)
    if not config_path.exists():
        notes.append(f"write {config_path} (see docs/operations.md; e.g. listen = [\"0.0.0.0:25\"]), readable by {user}")
    notes += ["systemctl daemon-reload", f"systemctl enable --now {path.stem}", f"journalctl -u {path.stem} -f"]
    out.print("next:\n" + "\n".join(f"  {n}" for n in notes), markup=False)
