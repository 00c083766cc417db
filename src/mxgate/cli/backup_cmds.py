"""`mxgate backup DIR` and `mxgate restore DIR` (store/backup.py; docs/operations.md, Backups)."""

from __future__ import annotations

from pathlib import Path

import typer

from mxgate.cli.common import config_path, handle_errors, home, out, print_json, settings


def register(app: typer.Typer) -> None:
    app.command("backup")(backup)
    app.command("restore")(restore)


@handle_errors
def backup(directory: Path = typer.Argument(..., help="new or empty directory to write the backup into"),
           maildirs: bool = typer.Option(False, "--maildirs", help="also copy the Maildirs (cur/ and new/)"),
           spools: bool = typer.Option(False, "--spools", help="also copy the spools (queued mail, as it is)"),
           json_out: bool = typer.Option(False, "--json")):
    """Back up this node while it runs: a consistent snapshot of the store (SQLite online backup, or
    pg_dump), keys, certificates, node settings; --maildirs and --spools add the mail."""
    from mxgate.store.backup import backup as run_backup

    h = home(read=True)
    manifest = run_backup(h, directory, store_url=h.store_url(settings().store.url), config=config_path(),
                          maildirs=maildirs, spools=spools)
    if json_out:
        print_json(manifest)
        return
    out.print(f"backup written to {Path(directory).absolute()}", markup=False)
    out.print(f"  store:          {manifest['store']} (schema {manifest['schema_revision']}, "
              f"policy version {manifest['policy_version']})", markup=False)
    out.print(f"  files:          {len(manifest['files'])} with checksums (store, keys, certificates, settings)", markup=False)
    if maildirs:
        out.print(f"  maildirs:       {manifest['maildir_messages']} messages", markup=False)
    if spools:
        out.print(f"  spools:         {manifest['spool_files']} files", markup=False)
    out.print(f"  took:           {manifest['finished_at'] - manifest['created_at']:.1f}s", markup=False)


@handle_errors
def restore(directory: Path = typer.Argument(..., help="a directory written by `mxgate backup`"),
            store_url: str = typer.Option("", "--store-url", help="PostgreSQL backups: the new, empty database to restore into"),
            force: bool = typer.Option(False, "--force", help="restore over a home that already holds data"),
            json_out: bool = typer.Option(False, "--json")):
    """Put a backup into a new home (--home): store, keys, certificates, settings, mail. Then start
    the node on it: mxgate --home HOME serve --config HOME/node.toml."""
    from mxgate.store.backup import restore as run_restore
    from mxgate.store.db import open_engine
    from mxgate.store.policy_store import PolicyStore

    h = home()
    manifest = run_restore(directory, h, force=force, store_url=store_url)
    url = store_url or h.database_url
    engine = open_engine(url)  # migrates a backup taken by an older mxgate
    try:
        version = PolicyStore(engine).latest_version_number()
    finally:
        engine.dispose()
    if json_out:
        print_json({"home": str(h.root), "policy_version": version, "manifest": manifest})
        return
    out.print(f"restored {Path(directory).absolute()} into {h.root} (policy version {version})", markup=False)
    config = h.root / "node.toml"
    start = f"mxgate --home {h.root} serve" + (f" --config {config}" if config.exists() else "")
    if store_url:
        start = f"MXGATE_STORE__URL=... {start}  (set [store] url to the restored database)"
    out.print(f"start it: {start}", markup=False)
