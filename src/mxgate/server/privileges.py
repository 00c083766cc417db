"""Running unprivileged: decide whether `mxgate serve` may run as it was started, and drop root.

Owns: the start-up rule ([node] user / group / allow_root), giving the home directory to the
service account, and dropping root for good (supplementary groups, gid, uid; then proving root
cannot be regained). Binding the listeners first is server/sockets.py's job; the caller orders
the two. Must not know what the node does once it runs.

Two supported ways to serve port 25 without Python running as root (docs/operations.md):
started as root with `[node] user` (bind, then drop here), or started as the account by systemd
with CAP_NET_BIND_SERVICE (nothing to drop; `user`, if set, must be the account we run as).
"""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from mxgate.errors import ConfigError

log = logging.getLogger("mxgate.privileges")

PR_SET_NO_NEW_PRIVS = 38  # linux/prctl.h


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    group: str


def resolve(user: str, group: str = "") -> Account:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"[node] user: no account named {user!r} (create it: useradd --system mxgate)") from None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"[node] group: no group named {group!r}") from None
    else:
        gid = pw.pw_gid
    return Account(pw.pw_name, pw.pw_uid, gid, grp.getgrgid(gid).gr_name)


def plan(euid: int, user: str, group: str, allow_root: bool) -> Account | None:
    """The account to drop to, or None to run as we are; ConfigError when we must not start."""
    if euid == 0:
        if user:
            account = resolve(user, group)
            if account.uid == 0:
                raise ConfigError(f"[node] user = {user!r} is root: name an unprivileged account")
            return account
        if allow_root:
            return None
        raise ConfigError("refusing to run as root: set [node] user (the node binds its ports, then runs as that "
                          "account), or start it as that account with CAP_NET_BIND_SERVICE (the systemd unit: "
                          "`mxgate service install`), or set [node] allow_root = true")
    if user:
        account = resolve(user, group)
        if account.uid != euid:
            raise ConfigError(f"[node] user = {user!r} but running as uid {euid}: start as root (to drop to it) "
                              f"or as {user!r}")
    return None


def give_home(root: Path, account: Account) -> int:
    """Make the home directory the account's (entries root created: database, keys, Maildirs).

    Walks the tree and changes only what differs, without following symbolic links, so a
    link planted in the home cannot hand a file elsewhere to the account. Returns entries changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [None, *dirnames, *filenames]:
            path = dirpath if name is None else os.path.join(dirpath, name)
            st = os.lstat(path)
            if (st.st_uid, st.st_gid) != (account.uid, account.gid):
                os.lchown(path, account.uid, account.gid)
                changed += 1
    return changed


def drop(account: Account) -> None:
    """setgroups → setgid → setuid (real, effective and saved), then prove root cannot come back."""
    os.initgroups(account.name, account.gid)  # the account's own supplementary groups, nothing of root's
    os.setgid(account.gid)
    os.setuid(account.uid)
    if os.getresuid() != (account.uid,) * 3 or os.getresgid() != (account.gid,) * 3:
        raise ConfigError(f"could not drop privileges to {account.name!r}: uids {os.getresuid()}, gids {os.getresgid()}")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise ConfigError("privileges were not dropped: setuid(0) succeeded after switching user")
    if 0 in os.getgroups() and account.gid != 0:
        raise ConfigError("privileges were not dropped: still in group root")
    _no_new_privileges()
    os.environ["HOME"] = pwd.getpwuid(account.uid).pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = account.name


def _no_new_privileges() -> None:
    """PR_SET_NO_NEW_PRIVS: nothing this process or its workers exec can gain privileges (setuid binaries)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
