"""Backup and restore of one node while it runs: the store, keys, certificates, node settings,
optionally Maildirs and spools (docs/operations.md, Backups).

Owns: the backup directory's layout and manifest, a consistent SQLite snapshot (the online backup
API: one read transaction, so writers keep going and the copy is of one instant), `pg_dump` /
`pg_restore` for a PostgreSQL store, and putting a backup back into a new home. Must not know
what the tables mean.

Consistency: the store is one snapshot. Maildir files are written once and renamed into new/ only
after they are on disk, so a copy made after the snapshot holds every message acknowledged before
the copy began (`maildirs_from` in the manifest); one that moved to cur/ meanwhile is looked up
there. Spools are copied as they are (a restored spool may deliver a message twice, never lose it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from mxgate.errors import StoreError

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "store/mxgate.db"
PG_FILE = "store/store.pgdump"
SQLITE_BUSY_SECONDS = 30


def sqlite_snapshot(src: Path, dst: Path) -> None:
    """A consistent, self-contained copy of a live SQLite database (WAL included), checked."""
    if not src.exists():
        raise StoreError(f"{src}: no such database")
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    source = sqlite3.connect(str(src), timeout=SQLITE_BUSY_SECONDS)
    target = sqlite3.connect(str(tmp))
    try:
        source.backup(target)  # all pages in one step: one read transaction, one instant
        target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        verdict = target.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise StoreError(f"the snapshot of {src} failed its integrity check: {verdict}")
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {src}: {exc}") from None
    finally:
        target.close()
        source.close()
    _fsync(tmp)
    os.replace(tmp, dst)


def backup(home, dest: Path, *, store_url: str, config: str | None, maildirs: bool = False,
           spools: bool = False) -> dict[str, Any]:
    """Write a backup of the node at `home` into the new or empty directory `dest`; returns the manifest."""
    from sqlalchemy.engine import make_url

    dest = Path(dest).absolute()
    if dest.exists() and any(dest.iterdir()):
        raise StoreError(f"{dest} is not empty: back up into a new directory")
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o700)  # keys and the database inside
    started = time.time()
    url = make_url(store_url)
    manifest: dict[str, Any] = {"format": FORMAT, "created_at": started, "home": str(home.root),
                                "store": url.get_backend_name(), "files": {}}
    (dest / "store").mkdir()
    if url.get_backend_name() == "sqlite":
        sqlite_snapshot(Path(url.database), dest / SQLITE_FILE)
        manifest.update(_store_facts(f"sqlite:///{dest / SQLITE_FILE}"))
    elif url.get_backend_name() == "postgresql":
        _pg_dump(url, dest / PG_FILE)
        manifest.update(_store_facts(store_url))
    else:
        raise StoreError(f"cannot back up a {url.get_backend_name()} store")
    for name in ("keys", "certs"):
        if (home.root / name).is_dir():
            shutil.copytree(home.root / name, dest / name, symlinks=True)
    if config and Path(config).is_file():
        shutil.copy2(config, dest / "node.toml")
    manifest["files"] = {str(p.relative_to(dest)): _sha256(p) for p in sorted(dest.rglob("*")) if p.is_file()}
    if maildirs:
        manifest["maildirs_from"] = time.time()  # every message acknowledged before this is in the copy
        manifest["maildir_messages"] = _copy_maildirs(home.maildir, dest / "maildir")
    if spools:
        manifest["spool_files"] = _copy_tree_as_is(home.spool, dest / "spool")
    manifest["finished_at"] = time.time()
    _write_json(dest / MANIFEST, manifest)
    return manifest


def restore(src: Path, home, *, force: bool = False, store_url: str = "") -> dict[str, Any]:
    """Put the backup in `src` into `home` (a new home unless force); returns the manifest."""
    src = Path(src).absolute()
    try:
        manifest = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{src}: not an mxgate backup (no {MANIFEST})") from None
    except json.JSONDecodeError as exc:
        raise StoreError(f"{src / MANIFEST}: damaged ({exc})") from None
    if not isinstance(manifest, dict):
        raise StoreError(f"{src / MANIFEST}: damaged (not a JSON object)")
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{src}: backup format {manifest.get('format')!r}; this mxgate reads format {FORMAT}")
    files = manifest.get("files")
    if (not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values())
            or not isinstance(manifest.get("store"), str)):
        raise StoreError(f"{src / MANIFEST}: damaged (no store name or file checksums)")
    for rel, digest in manifest["files"].items():
        path = src / rel
        if not path.is_file() or _sha256(path) != digest:
            raise StoreError(f"{src}: {rel} is missing or damaged (checksum differs): not restoring")
    if not force:
        used = [p for p in (home.database, home.maildir, home.spool, home.keys)
                if p.exists() and (p.is_file() or any(p.iterdir()))]
        if used:
            raise StoreError(f"{home.root} is in use ({used[0].name} exists): restore into a new home, or pass --force")
    if manifest["store"] == "sqlite":
        if store_url and not store_url.startswith("sqlite"):
            raise StoreError("this backup holds a SQLite store: restore it without --store-url")
        tmp = home.database.with_name(home.database.name + ".restore")
        shutil.copyfile(src / SQLITE_FILE, tmp)
        _fsync(tmp)
        for stale in (home.database.with_name(home.database.name + s) for s in ("-wal", "-shm")):
            stale.unlink(missing_ok=True)
        os.replace(tmp, home.database)
    else:
        if not store_url.startswith("postgresql"):
            raise StoreError("this backup holds a PostgreSQL dump: pass --store-url postgresql+psycopg://... "
                             "naming a new, empty database (created with createdb)")
        from sqlalchemy.engine import make_url

        _pg_restore(make_url(store_url), src / PG_FILE)
    for name in ("keys", "certs", "maildir", "spool"):
        if (src / name).is_dir():
            shutil.copytree(src / name, home.root / name, symlinks=True, dirs_exist_ok=True)
    for private in ("keys", "certs"):
        if (home.root / private).is_dir():
            os.chmod(home.root / private, 0o700)
    if (src / "node.toml").is_file():
        shutil.copy2(src / "node.toml", home.root / "node.toml")
    return manifest


# --- the parts ----------------------------------------------------------------------------------

def _store_facts(url: str) -> dict[str, Any]:
    """Schema revision and policy version of the snapshot, to compare after a restore. Read with a
    plain engine: open_engine would migrate the copy and switch it to WAL."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() \
                if "alembic_version" in tables else None
            version = conn.execute(text("SELECT coalesce(max(version), 0) FROM policy_versions")).scalar() \
                if "policy_versions" in tables else 0
    finally:
        engine.dispose()
    return {"schema_revision": revision, "policy_version": int(version or 0)}


def _libpq(url) -> tuple[list[str], dict[str, str]]:
    """Connection options for pg_dump/pg_restore; the password goes in the environment, not argv."""
    args = ["--host", url.host or "localhost", "--port", str(url.port or 5432), "--dbname", url.database or ""]
    if url.username:
        args += ["--username", url.username]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return args, env


def _pg_tool(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)), None)
    if not found:
        raise StoreError(f"{name} not found: install the PostgreSQL client (Debian: postgresql-client) or run it "
                         "yourself (docs/operations.md, Backups)")
    return str(found)


def _pg_dump(url, target: Path) -> None:
    args, env = _libpq(url)
    # --format=custom: compressed, restorable table by table; one transaction (a consistent snapshot).
    cmd = [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--file", str(target), *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise StoreError(f"pg_dump failed: {r.stderr.strip()}")


def _pg_restore(url, dump: Path) -> None:
    args, env = _libpq(url)
    cmd = [_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", "--single-transaction", *args, str(dump)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise StoreError(f"pg_restore failed: {r.stderr.strip()}")


def _copy_maildirs(src: Path, dst: Path) -> int:
    """Messages in cur/ and new/ of every folder (tmp/ holds nothing delivered). A message moved
    from new/ to cur/ while copying (a reader marked it seen) is taken from cur/."""
    copied = 0
    for folder in sorted(p for p in src.rglob("*") if p.is_dir() and p.name in ("cur", "new")):
        out = dst / folder.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for sub in ("cur", "new", "tmp"):
            (out.parent / sub).mkdir(exist_ok=True)
        for entry in os.scandir(folder):
            if not entry.is_file(follow_symlinks=False):
                continue
            source = Path(entry.path)
            try:
                shutil.copy2(source, out / entry.name)
            except FileNotFoundError:
                moved = list((folder.parent / "cur").glob(entry.name.split(":")[0] + "*"))
                if not moved:
                    continue  # deleted meanwhile
                shutil.copy2(moved[0], dst / moved[0].relative_to(src))
            copied += 1
    return copied


def _copy_tree_as_is(src: Path, dst: Path) -> int:
    copied = 0
    for path in sorted(src.rglob("*")) if src.is_dir() else []:
        target = dst / path.relative_to(src)
        try:
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                copied += 1
        except FileNotFoundError:
            continue  # delivered and removed while copying
    return copied


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)
