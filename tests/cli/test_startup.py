"""The CLI imports only what the command it runs needs (issue 19: a policy change starts fast)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import typer

from mxgate import cli


def test_the_command_table_matches_what_each_module_registers():
    for name in cli._COMMAND_MODULES:
        app = typer.Typer()
        importlib.import_module(name).register(app)
        registered = {c.name or c.callback.__name__ for c in app.registered_commands}
        registered |= {g.name or g.typer_instance.info.name for g in app.registered_groups}
        short = name.rpartition(".")[2]
        assert registered == {cmd for cmd, mod in cli._COMMANDS.items() if mod == short}, name
    assert set(cli._COMMANDS.values()) == {m.rpartition(".")[2] for m in cli._COMMAND_MODULES}


def _modules_after(tmp_path, *args: str) -> set[str]:
    script = ("import sys, json\nfrom mxgate.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              "print('\\n' + json.dumps(sorted(sys.modules)))")
    env = dict(os.environ, MXGATE_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=60)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_policy_command_does_not_import_the_probe_trace_or_tls_tooling(tmp_path):
    for args in (("connector", "list", "--help"), ("--home", str(tmp_path / "h"), "policy", "apply", "--help")):
        loaded = _modules_after(tmp_path, *args)
        assert "mxgate.cli.connector_cmds" in loaded or "mxgate.cli.policy_cmds" in loaded
        for heavy in ("mxgate.probe.client", "mxgate.trace.query", "mxgate.cli.probe_cmds", "mxgate.cli.tls_cmds",
                      "mxgate.cli.serve_cmds"):
            assert heavy not in loaded, (args, heavy)


def test_help_and_unknown_commands_still_see_every_command(tmp_path):
    assert "mxgate.cli.probe_cmds" in _modules_after(tmp_path, "--help")
    r = subprocess.run([sys.executable, "-m", "mxgate", "--help"], capture_output=True, text=True, timeout=60)
    assert all(cmd in r.stdout for cmd in ("policy", "connector", "probe", "trace", "serve"))
    r = subprocess.run([sys.executable, "-m", "mxgate", "conector", "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "No such command" in r.stderr


_SUBCOMMANDS = ("import sys, json, typer.main\nfrom mxgate import cli\n"
                "cli._register_all() if sys.argv[1] == '*' else cli._register_for(sys.argv[1:])\n"
                "root = typer.main.get_command(cli.app)\n"
                "print(json.dumps({n: sorted(getattr(c, 'commands', {})) for n, c in root.commands.items()}))")


def test_a_command_line_sees_every_subcommand_of_its_group():
    """`mxgate mailbox set-password ADDR` (README, "The CLI") is defined beside the credentials, in
    another module than `mailbox`'s: registering only the named command's module must still give
    its group every subcommand it has when all are registered."""
    def tree(*args: str) -> dict[str, list[str]]:
        out = subprocess.run([sys.executable, "-c", _SUBCOMMANDS, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    everything = tree("*")
    assert "set-password" in everything["mailbox"]
    for command in sorted(cli._COMMANDS):
        assert tree(command, "--help")[command] == everything[command], command
