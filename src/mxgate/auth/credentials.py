"""Submission credentials: per-mailbox passwords and per-application secrets, argon2id-hashed.

Owns: the `credentials` table (username, kind "mailbox"/"app", the address it sends as, the
argon2 hash), creating and checking credentials, and the pure send-as decision for an
authenticated identity. Shared by the CLI (`mxgate mailbox set-password`, `mxgate app-credential
new`) and the submission listener, so both use one code path.
Must not know SMTP, SASL framing or rate limits (server/submission.py owns those).

Secrets are never logged and never stored: only argon2id hashes (RFC 9106) are kept. An unknown
user name is verified against a dummy hash so it costs as much as a wrong password (no probing).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from mxgate.errors import NotFoundError, PolicyFormatError
from mxgate.policy.model import Policy
from mxgate.verdict import Verdict, accept, reject
from mxgate.store.schema import credentials

KINDS = ("mailbox", "app")
MIN_PASSWORD_LENGTH = 10
APP_SECRET_BYTES = 24  # 192 bits: application secrets are generated, never chosen
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Identity:
    """Who authenticated: the login name, its kind, and the address it acts for."""

    username: str
    kind: str
    address: str


def _mailbox_for(policy: Policy, address: str):
    address = address.lower()
    for m in policy.mailboxes:
        if address == m.address.lower() or address in (a.lower() for a in m.aliases):
            return m
    return None


def set_mailbox_password(engine: Engine, policy: Policy, address: str, password: str) -> None:
    """Create or replace the mailbox's submission password (login name = the mailbox address)."""
    mailbox = _mailbox_for(policy, address)
    if mailbox is None or mailbox.members:
        raise NotFoundError(f"no mailbox {address!r} (distribution lists cannot log in)")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PolicyFormatError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    _upsert(engine, mailbox.address.lower(), "mailbox", mailbox.address.lower(), _hasher.hash(password), "")


def new_app_credential(engine: Engine, policy: Policy, name: str, address: str, description: str = "") -> str:
    """A generated secret for an application sending as `address`; returned once, stored hashed."""
    name = name.strip()
    if not name or any(c.isspace() or ord(c) < 33 for c in name) or len(name) > 64:
        raise PolicyFormatError("app credential name: 1-64 printable characters without spaces")
    if "@" in name:
        raise PolicyFormatError("app credential name: must not look like an address (mailbox logins use those)")
    if _mailbox_for(policy, address) is None:
        raise NotFoundError(f"no mailbox {address!r}: an application sends as an existing mailbox address")
    secret = secrets.token_urlsafe(APP_SECRET_BYTES)
    _upsert(engine, name.lower(), "app", address.lower(), _hasher.hash(secret), description)
    return secret


def _upsert(engine: Engine, username: str, kind: str, address: str, secret_hash: str, description: str) -> None:
    values = dict(kind=kind, address=address, secret_hash=secret_hash, description=description, created_at=time.time())
    with engine.begin() as conn:
        done = conn.execute(update(credentials).where(credentials.c.username == username).values(**values)).rowcount
        if not done:
            conn.execute(insert(credentials).values(username=username, **values))


def remove_credential(engine: Engine, username: str) -> None:
    with engine.begin() as conn:
        if not conn.execute(delete(credentials).where(credentials.c.username == username.lower())).rowcount:
            raise NotFoundError(f"no credential {username!r}")


def list_credentials(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(credentials.c.username, credentials.c.kind, credentials.c.address,
                                   credentials.c.description, credentials.c.created_at).order_by(credentials.c.username))
        return [dict(r._mapping) for r in rows]


def verify_credentials(engine: Engine, username: str, secret: str) -> Identity | None:
    """The identity when `secret` matches; None otherwise. Blocking and slow on purpose (argon2)."""
    with engine.connect() as conn:
        row = conn.execute(select(credentials).where(credentials.c.username == username.lower())).first()
    try:
        _hasher.verify(row.secret_hash if row else _DUMMY_HASH, secret)
    except (VerificationError, InvalidHashError):
        return None
    return Identity(row.username, row.kind, row.address) if row else None


# --- send-as (pure) -------------------------------------------------------------------------

def allowed_senders(policy: Policy, identity: Identity) -> frozenset[str]:
    """The identity's address, its mailbox's aliases, and the mailbox's configured send_as."""
    mailbox = _mailbox_for(policy, identity.address)
    if mailbox is None:  # the mailbox was removed after the credential was made: nothing is allowed
        return frozenset()
    return frozenset(a.lower() for a in (mailbox.address, *mailbox.aliases, *mailbox.send_as))


def decide_send_as(policy: Policy, identity: Identity, sender: str) -> Verdict:
    """May this identity use `sender` (envelope MAIL FROM or header From)? 550 5.7.60 otherwise."""
    if sender.lower() in allowed_senders(policy, identity):
        return accept("sender-ok")
    return reject("send-as-denied", f"{identity.username} may not send as {sender}")
