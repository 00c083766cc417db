"""Admin accounts and API tokens in the store: argon2 password hashes, hashed bearer tokens,
the first-run admin, and the key that signs session cookies.

Owns: the `admin_users` and `api_tokens` tables and `<home>/keys/admin-session.key`.
Shared by the CLI (`mxgate admin ...`) and the web app, so both use one code path.
Must not know HTTP: cookies, CSRF and rate limits live in guard.py.

Passwords are argon2id (slow on purpose: they are guessable). API tokens are 256-bit random
values, so a fast SHA-256 is enough to store them and lets a request find its token by hash.
Neither a password nor a token is ever logged; both are shown once, when created.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from mxgate.errors import NotFoundError, PolicyFormatError
from mxgate.store.schema import admin_sessions, admin_users, api_tokens

DEFAULT_ADMIN = "admin"
TOKEN_PREFIX = "mxg_"
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
# Verifying against this keeps an unknown user name as slow as a wrong password (no user probing).
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def set_password(engine: Engine, username: str, password: str) -> None:
    """Create the admin or change their password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PolicyFormatError(f"password: at least {MIN_PASSWORD_LENGTH} characters are required")
    if not username or len(username) > 64:
        raise PolicyFormatError("username: 1 to 64 characters are required")
    hashed = hash_password(password)
    with engine.begin() as conn:
        found = conn.execute(select(admin_users.c.username).where(admin_users.c.username == username)).first()
        if found:
            conn.execute(update(admin_users).where(admin_users.c.username == username).values(password_hash=hashed))
            # A new password ends every session of this user on every node (a thief's included).
            conn.execute(delete(admin_sessions).where(admin_sessions.c.username == username))
        else:
            conn.execute(insert(admin_users).values(username=username, password_hash=hashed, created_at=time.time()))


def ensure_first_admin(engine: Engine) -> str | None:
    """On first run create `admin` with a random password and return it (to print once); else None."""
    with engine.connect() as conn:
        if conn.execute(select(admin_users.c.username).limit(1)).first():
            return None
    password = secrets.token_urlsafe(15)
    set_password(engine, DEFAULT_ADMIN, password)
    return password


def check_password(engine: Engine, username: str, password: str) -> bool:
    with engine.connect() as conn:
        row = conn.execute(select(admin_users.c.password_hash).where(admin_users.c.username == username)).first()
    try:
        return _hasher.verify(row.password_hash if row else _DUMMY_HASH, password) and row is not None
    except (VerificationError, InvalidHashError):
        return False


def remove_user(engine: Engine, username: str) -> None:
    """Remove an admin account and end its sessions; the last account cannot be removed."""
    with engine.begin() as conn:
        names = list(conn.execute(select(admin_users.c.username)).scalars())
        if username not in names:
            raise NotFoundError(f"admin user {username!r} does not exist")
        if len(names) == 1:
            raise PolicyFormatError(f"{username!r} is the only admin user; create another one first")
        conn.execute(delete(admin_users).where(admin_users.c.username == username))
        conn.execute(delete(admin_sessions).where(admin_sessions.c.username == username))


def users(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(admin_users.c.username).order_by(admin_users.c.username)).scalars())


# --- API tokens --------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    created_at: float
    last_used: float | None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(engine: Engine, name: str) -> tuple[TokenInfo, str]:
    """Create a token; the secret is returned once and only its hash is stored."""
    if not name or len(name) > 64:
        raise PolicyFormatError("token name: 1 to 64 characters are required")
    token_id = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = time.time()
    with engine.begin() as conn:
        conn.execute(insert(api_tokens).values(id=token_id, name=name, token_hash=_token_hash(token), created_at=now))
    return TokenInfo(token_id, name, now, None), token


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with engine.connect() as conn:
        rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at)).all()
    return [TokenInfo(r.id, r.name, r.created_at, r.last_used) for r in rows]


def revoke_token(engine: Engine, token_id: str) -> None:
    with engine.begin() as conn:
        if conn.execute(delete(api_tokens).where(api_tokens.c.id == token_id)).rowcount == 0:
            raise NotFoundError(f"API token {token_id!r} does not exist")


def token_name(engine: Engine, token: str) -> str | None:
    """The token's name if it is valid (and note when it was used), else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    digest = _token_hash(token)
    with engine.begin() as conn:
        row = conn.execute(select(api_tokens.c.id, api_tokens.c.name).where(api_tokens.c.token_hash == digest)).first()
        if row is None:
            return None
        conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(last_used=time.time()))
    return row.name


# --- sessions ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SessionRow:
    sid: str  # SHA-256 of the cookie's secret
    username: str
    csrf: str
    expires_at: float


def store_session(engine: Engine, username: str, max_age: float) -> tuple[str, SessionRow]:
    """A new session: the secret for the cookie, and its row (only the secret's hash is stored,
    so reading the database does not let anyone take over a session)."""
    now = time.time()
    secret = secrets.token_urlsafe(24)
    row = SessionRow(_token_hash(secret), username, secrets.token_urlsafe(24), now + max_age)
    with engine.begin() as conn:
        conn.execute(delete(admin_sessions).where(admin_sessions.c.expires_at < now))  # keeps the table small
        conn.execute(insert(admin_sessions).values(sid=row.sid, username=username, csrf=row.csrf, created_at=now,
                                                   expires_at=row.expires_at))
    return secret, row


def find_session(engine: Engine, secret: str) -> SessionRow | None:
    """The live session for this cookie secret whose user still exists, else None."""
    with engine.connect() as conn:
        r = conn.execute(select(admin_sessions).join(admin_users, admin_users.c.username == admin_sessions.c.username)
                         .where(admin_sessions.c.sid == _token_hash(secret),
                                admin_sessions.c.expires_at > time.time())).first()
    return SessionRow(r.sid, r.username, r.csrf, r.expires_at) if r else None


def end_session(engine: Engine, sid: str) -> None:
    """End one session, named by its stored id (the secret's hash)."""
    with engine.begin() as conn:
        conn.execute(delete(admin_sessions).where(admin_sessions.c.sid == sid))


def end_sessions(engine: Engine, username: str) -> int:
    with engine.begin() as conn:
        return conn.execute(delete(admin_sessions).where(admin_sessions.c.username == username)).rowcount


# --- the session-signing key ---------------------------------------------------------------------

def session_key(keys_dir: Path) -> bytes:
    """A random key kept in <home>/keys (0600), so sessions survive a restart but not a key rotation."""
    path = Path(keys_dir) / "admin-session.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another node process on this home won the race
        return path.read_bytes()
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key
