"""Issue 19: a policy change from the CLI starts fast — on a current embedded store it runs on
stdlib sqlite3 and imports neither SQLAlchemy, pydantic nor Rich — and loses nothing on the
way: the same validation, the same version N+1 rows, the same refusal of a concurrent change, the
same connection settings, the same enforcement by a running node. (Speed itself is bench P6's.)"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import rig
from mxgate.cli import coercion
from mxgate.config.home import Home
from mxgate.errors import ConcurrentChangeError, StoreError
from mxgate.policy.document import load_toml
from mxgate.store import sqlite as lite
from mxgate.store.db import open_engine
from mxgate.store.policy_store import PolicyStore

HEAVY = ("sqlalchemy", "pydantic", "rich", "typer._adapters", "alembic")
CONNECTOR = "Third-party filter service"

# Runs the CLI like the console script, then prints the modules it loaded (last line).
_SCRIPT = ("import sys, json\nfrom mxgate.cli import main\ncode = 0\ntry:\n    main(sys.argv[1:])\n"
           "except SystemExit as e:\n    code = e.code or 0\nprint('\\n' + json.dumps([code, sorted(sys.modules)]))\n")


def _user_env(**extra: str) -> dict:
    """The admin's shell: no MXGATE_<SECTION>__<FIELD> overrides (the test suite sets one)."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("MXGATE_") and "__" in k)}
    env.pop("MXGATE_STORE_URL", None)
    env.pop("MXGATE_CONFIG", None)
    env.update(extra)
    return env


def cli(home: Path, *args: str, env: dict | None = None) -> tuple[int, set[str], str, str]:
    """(exit code, modules loaded, stdout without the module list, stderr)."""
    r = subprocess.run([sys.executable, "-c", _SCRIPT, "--home", str(home), *args], capture_output=True, text=True,
                       env=env or _user_env(), timeout=60)
    out, _, last = r.stdout.rstrip("\n").rpartition("\n")
    code, modules = json.loads(last)
    return code, set(modules), out.removesuffix("\n"), r.stderr  # the script's own newline


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)


@pytest.fixture
def home(tmp_path) -> Path:
    """An initialised embedded store holding the guide's policy (version 1)."""
    h = Home.open(tmp_path / "home")
    assert rig.apply_policy(h, rig.GUIDE_POLICY) == 1
    return h.root


def _rows(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "mxgate.db") as c:
        return c.execute("SELECT version, actor, summary, document FROM policy_versions ORDER BY version").fetchall()


def test_policy_editing_commands_import_no_sqlalchemy_pydantic_or_rich(home, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text(rig.GUIDE_POLICY.replace('name = "Contoso"', 'name = "Contoso Ltd"'))
    commands = [
        ("connector", "set", CONNECTOR, "--sender-ip", "127.0.0.10,127.0.0.11", "--comment", "two gateways"),
        ("connector", "new", "Second", "--sender-domains", "*", "--sender-ip", "127.0.0.12"),
        ("connector", "remove", "Second"),
        ("connector", "new", "Relay", "--outbound", "--recipient-domains", "*", "--smart-hosts", "relay.test:25"),
        ("connector", "set", "Relay", "--outbound", "--disabled"),
        ("domain", "new", "fabrikam.test"),
        ("domain", "set", "fabrikam.test", "--match-subdomains"),
        ("mailbox", "new", "carol@contoso.test", "--alias", "caroline@contoso.test"),
        ("mailbox", "set", "carol@contoso.test", "--no-keep-copy"),  # a change: keep_copy is on by default
        ("mailbox", "remove", "carol@contoso.test"),
        ("domain", "remove", "fabrikam.test"),
        ("org", "set", "--authserv-id", "mx2.contoso.test"),
        ("org", "show", "--json"),
        ("policy", "apply", str(policy)),
        ("policy", "export"),
        ("policy", "history", "--json", "--limit", "3"),
        ("connector", "show", CONNECTOR, "--json"),
    ]
    for args in commands:
        code, modules, out, err = cli(home, *args)
        assert code == 0, (args, err)
        assert not _heavy(modules), (args, _heavy(modules))
    assert [r[0] for r in _rows(home)] == list(range(1, 15))  # one version per change, none lost
    assert json.loads(cli(home, "policy", "history", "--json", "--limit", "1")[2])[0]["version"] == 14


def test_the_light_path_writes_what_the_sqlalchemy_path_reads(home):
    code, modules, out, err = cli(home, "connector", "set", CONNECTOR, "--sender-ip", "127.0.0.10,127.0.0.20")
    assert code == 0 and out == f"policy version 2: inbound connector '{CONNECTOR}' changed", (out, err)
    assert "sqlalchemy" not in modules
    engine = open_engine(f"sqlite:///{home / 'mxgate.db'}")
    try:
        store = PolicyStore(engine)
        v2 = store.current()
        assert v2.version == 2 and v2.actor.startswith("cli:") and "changed" in v2.summary
        assert v2.policy.inbound_connectors[0].sender_ip_addresses == ("127.0.0.10", "127.0.0.20")
        # The same store logic over both interfaces reads the same versions.
        light = PolicyStore(lite.open_current(f"sqlite:///{home / 'mxgate.db'}"))
        assert light.current() == v2 and light.get(1) == store.get(1) and light.history() == store.history()
        # And a version written by the SQLAlchemy path right after is N+1 for the light path.
        v3 = store.save(v2.policy, actor="t", summary="engine", base_version=2)
        assert (v3.version, light.latest_version_number()) == (3, 3)
    finally:
        engine.dispose()


def test_light_connections_get_the_store_settings(home):
    db = home / "mxgate.db"
    os.chmod(db, 0o644)  # tightened again on open, as open_engine does
    conn = lite.open_current(f"sqlite:///{db}").conn
    pragma = lambda name: conn.execute(f"PRAGMA {name}").fetchone()[0]  # noqa: E731
    assert pragma("journal_mode") == "wal"
    assert pragma("synchronous") == 2  # FULL: a policy version survives a crash
    assert pragma("busy_timeout") == lite.SQLITE_BUSY_TIMEOUT_MS
    assert pragma("foreign_keys") == 1
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_a_store_to_create_migrate_or_refuse_is_left_to_open_engine(tmp_path):
    assert lite.open_current(f"sqlite:///{tmp_path / 'missing.db'}") is None
    assert not (tmp_path / "missing.db").exists()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as c:
        c.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        c.execute("INSERT INTO alembic_version VALUES ('0003')")
    assert lite.open_current(f"sqlite:///{old}") is None
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert lite.open_current(f"sqlite:///{empty}") is None
    for url in ("postgresql+psycopg://u@127.0.0.1/db", "sqlite://", "sqlite:///:memory:", f"sqlite:///{old}?mode=ro"):
        assert lite.open_current(url) is None, url


def test_a_first_command_on_a_new_home_creates_the_store(tmp_path):
    code, modules, out, err = cli(tmp_path / "new", "domain", "new", "contoso.test")
    assert code == 0, err
    assert "sqlalchemy" in modules  # no store yet: created and migrated by open_engine
    assert [r[0] for r in _rows(tmp_path / "new")] == [1]
    code, modules, out, err = cli(tmp_path / "new", "domain", "set", "contoso.test", "--match-subdomains")
    assert code == 0 and "sqlalchemy" not in modules, err


def test_a_change_computed_from_an_old_version_is_refused(home):
    url = f"sqlite:///{home / 'mxgate.db'}"
    light, engine = PolicyStore(lite.open_current(url)), open_engine(url)
    try:
        base = light.current()
        PolicyStore(engine).save(base.policy, actor="other", summary="meanwhile", base_version=base.version)
        with pytest.raises(ConcurrentChangeError, match="based on 1"):
            light.save(base.policy, actor="t", summary="stale", base_version=base.version)
    finally:
        engine.dispose()
    assert [r[0] for r in _rows(home)] == [1, 2]


def test_racing_light_writers_from_one_version_exactly_one_wins(home):
    url = f"sqlite:///{home / 'mxgate.db'}"
    policy = load_toml(rig.GUIDE_POLICY)
    results, lock, start = [], threading.Lock(), threading.Barrier(6)

    def save(i):
        store = PolicyStore(lite.open_current(url))  # each writer its own connection, as processes have
        start.wait()
        try:
            outcome = store.save(policy, actor=f"w{i}", summary="race", base_version=1).version
        except ConcurrentChangeError:
            outcome = "refused"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=save, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert sorted(results, key=str) == [2] + ["refused"] * 5
    assert [r[0] for r in _rows(home)] == [1, 2]


def test_two_cli_processes_from_one_version_one_is_refused(home):
    # Two admins: each command reads version 1 and saves 2; one lands, the other is told so.
    procs = [subprocess.Popen([sys.executable, "-m", "mxgate", "--home", str(home), "connector", "set", CONNECTOR,
                               "--comment", f"admin {i}"], env=_user_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outcomes = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in procs]
    # Both may also succeed one after the other (the second read version 2): never a lost update.
    assert all(code in (0, 1) for code, _, _ in outcomes), outcomes
    refused = [err for code, _, err in outcomes if code == 1]
    assert [r[0] for r in _rows(home)] == list(range(1, 2 + len(outcomes) - len(refused)))
    assert all("policy changed meanwhile" in err or "same policy version" in err for err in refused)


def test_a_locked_store_is_a_store_error_not_a_traceback(home):
    db = str(home / "mxgate.db")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
    try:
        impatient = lite.SqliteSql(lite.connect(db), db)
        impatient.conn.execute("PRAGMA busy_timeout=50")
        store = PolicyStore(impatient)
        with pytest.raises(StoreError, match="database is locked"):
            store.save(store.current().policy, actor="t", summary="x", base_version=1)
        assert not impatient.conn.in_transaction
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [r[0] for r in _rows(home)] == [1]


def test_an_invalid_change_exits_2_and_leaves_the_store_untouched(home, tmp_path):
    before = _rows(home)
    code, modules, out, err = cli(home, "connector", "set", CONNECTOR, "--sender-ip-addresses", "300.1.1.1")
    assert code == 2 and "invalid-ip" in err and "Traceback" not in err, err
    assert "sqlalchemy" not in modules
    bad = tmp_path / "bad.toml"
    bad.write_text(rig.GUIDE_POLICY + '\n[[inbound_connector]]\nname = "X"\nsender_domains = []\n')
    code, _, out, err = cli(home, "policy", "apply", str(bad))
    assert code == 2 and "sender-domains-required" in err, err
    code, _, out, err = cli(home, "connector", "set", "no such connector", "--comment", "x")
    assert code == 1 and "does not exist" in err, err
    code, _, out, err = cli(home, "policy", "apply", str(tmp_path / "missing.toml"))
    assert code == 2 and "does not exist" in err, err
    assert _rows(home) == before


def test_settings_from_a_file_or_the_environment_are_still_read(home, tmp_path):
    # With a node.toml or MXGATE_<SECTION>__<FIELD> values the settings schema is loaded, so a
    # configured [store] url is used and a wrong setting is still an error, as for `mxgate serve`.
    other = tmp_path / "other.db"
    config = tmp_path / "node.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{other}"\n')
    code, modules, out, err = cli(home, "domain", "new", "fabrikam.test", env=_user_env(MXGATE_CONFIG=str(config)))
    assert code == 0, err
    assert [r[0] for r in _rows(home)] == [1]  # the home's own store was not the one changed
    with sqlite3.connect(other) as c:
        assert c.execute("SELECT MAX(version) FROM policy_versions").fetchone()[0] == 1
    code, _, out, err = cli(home, "domain", "new", "x.test", env=_user_env(MXGATE_NODE__WORKERS="many"))
    assert code == 1 and "node settings: node.workers" in err, err


# --- Typer's coercion without pydantic gives Typer's results ----------------------------------

def test_plain_coercion_agrees_with_typers_adapters(tmp_path):
    from pathlib import PurePath

    from typer._adapters import try_build_adapter
    from typer.models import ArgumentInfo, OptionInfo

    existing = tmp_path / "f.toml"
    existing.write_text("")
    cases = [
        (str, OptionInfo(), ["", "x", "Grüße", " spaced "]),
        (bool, OptionInfo(), [True, False]),
        (int, OptionInfo(), ["0", "20", "-3", 7]),
        (list[str], OptionInfo(), [("a", "b"), [], ["x"]]),
        (Path, ArgumentInfo(exists=True, dir_okay=False), [str(existing)]),
        (Path, OptionInfo(), ["out.toml", "/tmp"]),
    ]
    for annotation, info, values in cases:
        adapter = try_build_adapter(annotation, info)
        for value in values:
            plain = coercion.plain_value(annotation, info, value)
            assert plain is not coercion._UNHANDLED, (annotation, value)
            want = adapter.validate_python(value)
            assert plain == want and type(plain) is type(want) or isinstance(plain, PurePath) and plain == Path(want), \
                (annotation, value, plain, want)
    # What it does not take as is goes to Typer (its messages, its conversions).
    for annotation, info, value in [(int, OptionInfo(), " 20"), (int, OptionInfo(), "1_000"), (int, OptionInfo(min=1), "5"),
                                    (str, OptionInfo(), b"bytes"), (Path, OptionInfo(), "a/./b"),
                                    (str, OptionInfo(parser=str.upper), "x"), (bool, OptionInfo(), "yes")]:
        assert coercion.plain_value(annotation, info, value) is coercion._UNHANDLED, (annotation, value)


def test_typer_still_refuses_bad_values_with_its_messages(tmp_path):
    app = typer.Typer()

    @app.command()
    def cmd(file: Path = typer.Argument(..., exists=True, dir_okay=False), limit: int = typer.Option(20, "--limit"),
            name: str = typer.Option("n", "--name")):
        typer.echo(f"{file.name} {limit + 1} {name}")

    runner = CliRunner()
    f = tmp_path / "p.toml"
    f.write_text("")
    assert runner.invoke(app, [str(f), "--limit", "41", "--name", "x"]).output == "p.toml 42 x\n"
    words = lambda r: "".join(c for c in r.output if c.isalnum())  # noqa: E731 (Rich boxes and wraps the message)
    r = runner.invoke(app, [str(tmp_path / "missing.toml")])
    assert r.exit_code == 2 and "doesnotexist" in words(r)
    r = runner.invoke(app, [str(tmp_path)])
    assert r.exit_code == 2 and "isadirectory" in words(r)
    r = runner.invoke(app, [str(f), "--limit", "many"])  # not plain: Typer's adapter and its message
    assert r.exit_code == 2 and "--limit" in r.output and "integer" in words(r)


# --- a running node enforces the change -------------------------------------------------------

def rcpt_reply(port: int, source: str) -> tuple[int, str]:
    with rig.RawSMTP("127.0.0.1", port, source) as c:
        c.greeting(); c.cmd("EHLO x"); c.starttls(); c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@fabrikam.test>")
        reply = c.cmd("RCPT TO:<alice@contoso.test>")
        c.cmd("QUIT")
        return reply


def test_a_running_node_enforces_a_light_path_change(node_factory):
    n = node_factory()  # the guide's policy: the attacker address is refused at RCPT
    assert rcpt_reply(n.port(), rig.ATTACKER)[0] == 550
    code, modules, out, err = cli(n.home.root, "connector", "set", CONNECTOR, "--sender-ip",
                                  f"{rig.GATEWAY},{rig.ATTACKER}")
    assert code == 0 and "sqlalchemy" not in modules, err
    assert rig.wait_until(lambda: rcpt_reply(n.port(), rig.ATTACKER)[0] == 250, timeout=30), "never enforced"
    code, _, out, err = cli(n.home.root, "connector", "set", CONNECTOR, "--sender-ip", rig.GATEWAY)
    assert code == 0, err
    assert rig.wait_until(lambda: rcpt_reply(n.port(), rig.ATTACKER)[0] == 550, timeout=30), "never enforced"
    assert n.node.watcher.current.version == 3
