"""The cluster's keys in the shared store: SRS secrets, DKIM signing keys, the ARC sealing key.

Owns: the rows of `cluster_keys` (one per kind, name and serial), making the first key of a kind
(adopting the node's old key file if there is one, so a single node keeps its secret when it
joins a cluster), rotation, which key signs and which still verify, export/import files (0600),
and each node's cached copy (re-read every `refresh` seconds, so a rotation on one node is used by
every node within that time).

States: per kind and name one "active" key signs; "pending" DKIM keys are published (listed
for DNS) but do not sign until activated (auth/dkim_sign.py's publish → activate → retire
steps, used by the admin centre); "retired" keys still verify until `valid_until`.
Rotation: a new key becomes active at once and the old one is retired, valid for `overlap` more
seconds — an SRS secret for MAX_AGE_DAYS (every address it issued still
reverses until it would expire anyway), a DKIM or ARC key for KEY_OVERLAP (its DNS record stays
listed by `mxgate keys dns` so messages in flight still verify; remove the record after that).
Key material is never logged or printed except by `mxgate keys export` into a 0600 file.
Must not know: how a key is used (delivery/srs.py, auth/dkim_sign.py, auth/arc.py do).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from mxgate.errors import MxgateError
from mxgate.store.schema import cluster_keys

KINDS = ("srs", "dkim", "arc")
SRS_NAME = "srs"
SRS_OVERLAP = 21 * 86400  # delivery/srs.MAX_AGE_DAYS: an issued address is refused after that anyway
KEY_OVERLAP = 7 * 86400  # DKIM/ARC: long enough for any queued or forwarded message to be verified
DEFAULT_DKIM_SELECTOR = "mxgate"


class KeyError_(MxgateError):
    """A key operation that cannot be done as asked (the text says why)."""


@dataclass(frozen=True)
class KeyInfo:
    """A key without its material, for listings."""

    kind: str
    name: str
    serial: int
    selector: str
    public: str
    created_at: float
    retired_at: float | None
    valid_until: float | None
    status: str = "active"

    def state(self, now: float) -> str:
        if self.status != "retired":
            return self.status
        return "retired" if (self.valid_until or 0) > now else "expired"


def selector_for(base: str, serial: int) -> str:
    """Serial 1 keeps the selector nodes used before keys were shared; later ones are numbered."""
    return base if serial == 1 else f"{base}{serial}"


def _id(kind: str, name: str, serial: int) -> str:
    return f"{kind}:{name.lower()}:{serial}"


def _make(kind: str) -> tuple[bytes, str]:
    """(private material, public text) for a new key of this kind."""
    if kind == "srs":
        return secrets.token_bytes(32), ""
    from mxgate.auth.dkim import generate_dkim_key

    pem, txt = generate_dkim_key()
    return pem, txt


def _write_private(path: Path, data: bytes) -> None:
    """0600 from the first byte (never created readable and tightened afterwards)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class KeyRing:
    def __init__(self, engine, keys_dir: Path | None = None, *, refresh: float = 2.0, clock=time.time,
                 srs_file: str = ""):
        self.engine, self.keys_dir, self.refresh, self.clock = engine, Path(keys_dir) if keys_dir else None, refresh, clock
        self.srs_file = srs_file  # [node] srs_key_file: adopted as the first secret when the store has none
        self._cache: dict[tuple[str, str], tuple[float, list]] = {}
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------------------------
    def _rows(self, kind: str, name: str, fresh: bool = False) -> list:
        now = self.clock()
        key = (kind, name.lower())
        with self._lock:
            hit = self._cache.get(key)
        if hit and not fresh and now - hit[0] < self.refresh:
            return hit[1]
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(cluster_keys).where(cluster_keys.c.kind == kind, cluster_keys.c.name == name.lower())
                                    .order_by(cluster_keys.c.serial.desc())).all()
        except Exception:
            if hit is None or fresh:
                raise
            rows = hit[1]  # the store is away: keep signing and verifying with the keys we have
        with self._lock:
            self._cache[key] = (now, rows)
        return rows

    def _ensure(self, kind: str, name: str, base: str, adopt: Path | None = None) -> list:
        rows = self._rows(kind, name)
        if rows:
            return rows
        if adopt is not None and adopt.exists():
            material, public = self._adopt(kind, adopt)
        else:
            material, public = _make(kind)
            if kind == "srs" and adopt is not None and adopt.parent.is_dir():
                # Also the node's file (0600): nodes on separate stores share a secret by copying it
                # ([node] srs_key_file); nodes on one store need no copy.
                _write_private(adopt, material)
        try:
            with self.engine.begin() as conn:
                conn.execute(cluster_keys.insert().values(
                    id=_id(kind, name, 1), kind=kind, name=name.lower(), serial=1, selector=selector_for(base, 1),
                    state="active", material=material, public=public, created_at=self.clock(), retired_at=None, valid_until=None))
        except IntegrityError:
            pass  # another node made it first: use theirs
        return self._rows(kind, name, fresh=True)

    def cached(self, kind: str, name: str) -> bool:
        """True when the keys of (kind, name) are known and fresh: reading them asks no database."""
        with self._lock:
            hit = self._cache.get((kind, name.lower()))
        return hit is not None and bool(hit[1]) and self.clock() - hit[0] < self.refresh

    @staticmethod
    def _adopt(kind: str, path: Path) -> tuple[bytes, str]:
        material = path.read_bytes()
        txt = path.with_suffix(".txt")
        return material, (txt.read_text(encoding="ascii").strip() if kind != "srs" and txt.exists() else "")

    def _usable(self, rows) -> list:
        """Keys that verify (and are published): active and pending ones, retired ones in their overlap."""
        now = self.clock()
        return [r for r in rows if r.state != "retired" or (r.valid_until or 0) > now]

    @staticmethod
    def _active(rows):
        return next((r for r in rows if r.state == "active"), rows[0])

    def srs_secrets(self) -> list[bytes]:
        """The signing secret first, then retired ones still inside their overlap (for reversing)."""
        adopt = Path(self.srs_file) if self.srs_file else (self.keys_dir / "srs.key" if self.keys_dir else None)
        rows = self._ensure("srs", SRS_NAME, "", adopt)
        active = self._active(rows)
        return [bytes(active.material)] + [bytes(r.material) for r in self._usable(rows) if r is not active]

    def dkim(self, domain: str, base: str = DEFAULT_DKIM_SELECTOR) -> tuple[str, bytes]:
        """(selector, private key PEM) that signs for `domain` now; made on first use."""
        domain = domain.lower().rstrip(".")
        rows = self._rows("dkim", domain)
        if not rows:  # the node's file key is only read to make the first key (not per message)
            adopt = None
            if self.keys_dir:  # a node's file key (its active selector) becomes the cluster's first key
                marker = self.keys_dir / f"dkim-{domain}.active"
                chosen = marker.read_text(encoding="ascii").strip() if marker.exists() else ""
                base = chosen or base
                adopt = self.keys_dir / f"dkim-{domain}.{base}.pem"
            rows = self._ensure("dkim", domain, base, adopt)
        row = self._active(rows)
        return row.selector, bytes(row.material)

    def arc(self, base: str) -> tuple[str, bytes]:
        """(selector, private key PEM) of the gateway's ARC seal; made on first use."""
        rows = self._rows("arc", "arc")  # the file to adopt is only named when there is no key yet
        if not rows:  # (issue 19: its pathlib join cost more than the cached read, twice per message)
            rows = self._ensure("arc", "arc", base, self.keys_dir / f"arc-{base}.pem" if self.keys_dir else None)
        row = self._active(rows)
        return row.selector, bytes(row.material)

    def public_records(self, kind: str, name: str) -> list[tuple[str, str, str]]:
        """(selector, TXT value, state) of every DKIM/ARC key whose record should be published."""
        return [(r.selector, r.public, r.state) for r in self._usable(self._rows(kind, name, fresh=True))]

    def list(self) -> list[KeyInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(*[c for c in cluster_keys.c if c.name != "material"])
                                .order_by(cluster_keys.c.kind, cluster_keys.c.name, cluster_keys.c.serial)).all()
        return [KeyInfo(r.kind, r.name, r.serial, r.selector, r.public, r.created_at, r.retired_at, r.valid_until,
                        r.state) for r in rows]

    # --- changing -----------------------------------------------------------------------------
    def rotate(self, kind: str, name: str, *, overlap: float | None = None, base: str | None = None) -> KeyInfo:
        """A new key signs from now on; the one it replaces stays valid for `overlap` seconds."""
        if kind not in KINDS:
            raise KeyError_(f"unknown key kind {kind!r} (one of {', '.join(KINDS)})")
        name = SRS_NAME if kind == "srs" else ("arc" if kind == "arc" else name.lower().rstrip("."))
        if not name:
            raise KeyError_("a DKIM key needs --domain")
        overlap = (SRS_OVERLAP if kind == "srs" else KEY_OVERLAP) if overlap is None else overlap
        rows = self._rows(kind, name, fresh=True)
        if not rows:  # nothing to replace yet: the first key is the rotation
            if kind == "srs":
                self.srs_secrets()
            elif kind == "dkim":
                self.dkim(name, base or DEFAULT_DKIM_SELECTOR)
            else:
                self.arc(base or "mxgate-gw")
            rows = self._rows(kind, name, fresh=True)
        current = self._active(rows)
        base = base or _base_of(current.selector, current.serial)
        serial = rows[0].serial + 1
        material, public = _make(kind)
        now = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(update(cluster_keys).where(cluster_keys.c.kind == kind, cluster_keys.c.name == name,
                                                        cluster_keys.c.state == "active")
                             .values(state="retired", retired_at=now, valid_until=now + overlap))
                conn.execute(cluster_keys.insert().values(
                    id=_id(kind, name, serial), kind=kind, name=name, serial=serial, selector=selector_for(base, serial),
                    state="active", material=material, public=public, created_at=now, retired_at=None, valid_until=None))
        except IntegrityError:
            raise KeyError_("another node rotated this key at the same moment; list the keys and try again") from None
        with self._lock:
            self._cache.pop((kind, name), None)
        return KeyInfo(kind, name, serial, selector_for(base, serial), public, now, None, None)

    def export(self, path: Path) -> int:
        """Every key with its material into `path` (JSON, 0600); returns how many."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(cluster_keys).order_by(cluster_keys.c.id)).all()
        data = [{**{c: getattr(r, c) for c in ("id", "kind", "name", "serial", "selector", "state", "public",
                                                "created_at", "retired_at", "valid_until")},
                 "material": base64.b64encode(bytes(r.material)).decode("ascii")} for r in rows]
        _write_private(Path(path), json.dumps({"mxgate_keys": 1, "keys": data}, indent=1).encode())
        return len(data)

    def import_(self, path: Path) -> int:
        """Keys from an export file; keys already present (same id) are kept as they are."""
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
            items = doc["keys"] if doc.get("mxgate_keys") == 1 else None
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise KeyError_(f"{path}: not an `mxgate keys export` file ({exc.__class__.__name__})") from None
        if not isinstance(items, list):
            raise KeyError_(f"{path}: not an `mxgate keys export` file")
        added = 0
        for item in items:
            try:
                values = {c: item[c] for c in ("id", "kind", "name", "serial", "selector", "state", "public",
                                               "created_at", "retired_at", "valid_until")}
                values["material"] = base64.b64decode(item["material"], validate=True)
            except (KeyError, TypeError, ValueError):
                raise KeyError_(f"{path}: a key entry is incomplete or damaged") from None
            if values["kind"] not in KINDS:
                raise KeyError_(f"{path}: unknown key kind {values['kind']!r}")
            try:
                with self.engine.begin() as conn:
                    conn.execute(cluster_keys.insert().values(**values))
                added += 1
            except IntegrityError:
                continue
        with self._lock:
            self._cache.clear()
        return added


    # --- DKIM selector rotation in steps (auth/dkim_sign.py: publish → activate → retire) ------
    def dkim_rows(self) -> list:
        """Every DKIM key that verifies (active, pending, retired in its overlap), by domain and selector."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(cluster_keys).where(cluster_keys.c.kind == "dkim")
                                .order_by(cluster_keys.c.name, cluster_keys.c.selector)).all()
        return self._usable(rows)

    def dkim_publish(self, domain: str, selector: str) -> tuple[str, str]:
        """A new pending key under `selector`: listed for DNS, not signing. (selector, TXT value)."""
        domain = domain.lower().rstrip(".")
        self.dkim(domain)  # the domain's first key exists (adopted or made) before a second one
        rows = self._rows("dkim", domain, fresh=True)
        if any(r.selector == selector for r in rows):
            raise KeyError_(f"selector {selector!r} already has a key for {domain}")
        material, public = _make("dkim")
        serial = rows[0].serial + 1
        try:
            with self.engine.begin() as conn:
                conn.execute(cluster_keys.insert().values(
                    id=_id("dkim", domain, serial), kind="dkim", name=domain, serial=serial, selector=selector,
                    state="pending", material=material, public=public, created_at=self.clock(), retired_at=None,
                    valid_until=None))
        except IntegrityError:
            raise KeyError_("another node changed this domain's keys at the same moment; try again") from None
        self._forget("dkim", domain)
        return selector, public

    def dkim_activate(self, domain: str, selector: str, overlap: float = KEY_OVERLAP) -> None:
        """`selector` signs from now on (every node within `refresh`); the key it replaces is retired."""
        domain = domain.lower().rstrip(".")
        now = self.clock()
        with self.engine.begin() as conn:
            found = conn.execute(select(cluster_keys.c.id).where(
                cluster_keys.c.kind == "dkim", cluster_keys.c.name == domain, cluster_keys.c.selector == selector,
                cluster_keys.c.state != "retired")).first()
            if found is None:
                raise KeyError_(f"no DKIM key {selector!r} for {domain}: publish it first")
            conn.execute(update(cluster_keys).where(cluster_keys.c.kind == "dkim", cluster_keys.c.name == domain,
                                                    cluster_keys.c.state == "active", cluster_keys.c.id != found.id)
                         .values(state="retired", retired_at=now, valid_until=now + overlap))
            conn.execute(update(cluster_keys).where(cluster_keys.c.id == found.id)
                         .values(state="active", retired_at=None, valid_until=None))
        self._forget("dkim", domain)

    def dkim_retire(self, domain: str, selector: str) -> None:
        """Delete a key that no longer signs (then remove its TXT record from DNS)."""
        domain = domain.lower().rstrip(".")
        with self.engine.begin() as conn:
            row = conn.execute(select(cluster_keys).where(cluster_keys.c.kind == "dkim", cluster_keys.c.name == domain,
                                                          cluster_keys.c.selector == selector)).first()
            if row is None:
                raise KeyError_(f"no DKIM key {selector!r} for {domain}")
            if row.state == "active":
                raise KeyError_(f"{selector!r} signs {domain}'s mail now; sign with another selector before retiring it")
            conn.execute(cluster_keys.delete().where(cluster_keys.c.id == row.id))
        self._forget("dkim", domain)

    def _forget(self, kind: str, name: str) -> None:
        with self._lock:
            self._cache.pop((kind, name), None)


def _base_of(selector: str, serial: int) -> str:
    suffix = str(serial)
    return selector[: -len(suffix)] if serial > 1 and selector.endswith(suffix) else selector
