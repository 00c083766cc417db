"""The home directory: where one node keeps its database, spool, maildirs, certificates, logs.

Owns: the layout below `--home` (or MXGATE_HOME, default ./mxgate-data), created on first use.
Must not know what is stored in each place.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "./mxgate-data"
SUBDIRS = ("spool", "maildir", "certs", "logs", "keys")


def private(path: Path, mode: int) -> None:
    """Give a file or directory we own exactly `mode` (another user's is left alone: a CLI user
    reading someone else's home must not fail here)."""
    st = os.stat(path)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def open(cls, path: str | os.PathLike | None = None) -> "Home":
        root = Path(path or os.environ.get("MXGATE_HOME") or DEFAULT_HOME).absolute()
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The store, keys, spools and mail are private to the node's user: the home and each part
        # are 0700 whatever the umask (mkdir's mode is masked by it, chmod is not).
        private(root, 0o700)
        for sub in SUBDIRS:
            (root / sub).mkdir(exist_ok=True, mode=0o700)
            private(root / sub, 0o700)
        return cls(root)

    @property
    def database(self) -> Path:
        return self.root / "mxgate.db"

    @property
    def database_url(self) -> str:
        return self.store_url()

    def store_url(self, configured: str = "") -> str:
        """The one precedence rule for `mxgate serve` and every other command: the node
        settings' [store] url (from the config file or MXGATE_STORE__URL), else MXGATE_STORE_URL,
        else SQLite in this home directory."""
        return configured or os.environ.get("MXGATE_STORE_URL") or f"sqlite:///{self.database}"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def maildir(self) -> Path:
        return self.root / "maildir"

    @property
    def certs(self) -> Path:
        return self.root / "certs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def logs(self) -> Path:
        return self.root / "logs"
