"""What the admin centre needs from the node it runs in, gathered in one object (`app.state.admin`).

Owns: the AdminState value and the shared edit path `save_edit` used by both the REST API and
the pages — the same sequence as the CLI (policy/edit.py → PolicyStore.save → validate), so a
change made anywhere is checked by the same rules and refused with the same message.
Must not know HTTP or templates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from mxgate.admin.guard import LoginLimiter, Sessions
from mxgate.admin.jobs import Jobs
from mxgate.config.home import Home
from mxgate.config.node import AdminSection
from mxgate.policy import edit
from mxgate.policy.model import object_to_dict
from mxgate.store.policy_store import PolicyStore, PolicyVersion
from mxgate.trace.store import TraceStore


@dataclass
class AdminState:
    engine: Any
    policy_store: PolicyStore
    trace: TraceStore
    node_name: str
    home: Home
    settings: AdminSection
    sessions: Sessions
    node: Any = None  # the running Node when served by `mxgate serve`; None in API unit tests
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    jobs: Jobs = field(default_factory=Jobs)
    started_at: float = field(default_factory=time.time)

    def role(self, name: str) -> Any:
        return self.node.roles.get(name) if self.node is not None else None


@dataclass(frozen=True)
class SaveResult:
    version: int
    summary: str
    warnings: list[str]
    object: dict[str, Any] | None

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "summary": self.summary, "warnings": self.warnings, "object": self.object}


def save_edit(st: AdminState, kind: str, op: str, ident: str, values: dict[str, Any] | None, actor: str) -> SaveResult:
    """Add ("new"), change ("set") or remove one object and store the result as a new version.

    Raises PolicyError (message identical to the CLI's), NotFoundError or ConcurrentChangeError.
    """
    from mxgate.policy.document import summarize_change
    from mxgate.policy.validate import policy_warnings

    cur = st.policy_store.current()
    if op == "new":
        new = edit.add(cur.policy, kind, values or {})
        ident = str((values or {}).get(edit.KINDS[kind][1], ident))
    elif op == "set":
        new = edit.change(cur.policy, kind, ident, values or {})
        ident = str((values or {}).get(edit.KINDS[kind][1], ident))  # a rename answers under the new name
    else:
        new = edit.remove(cur.policy, kind, ident)
    obj = None
    if op != "remove":
        obj = object_to_dict(edit.find(new, kind, ident))
    if cur.version and new == cur.policy:  # as `policy apply` and PUT /policy: no change, no version
        return SaveResult(cur.version, "no change", policy_warnings(new), obj)
    saved: PolicyVersion = st.policy_store.save(new, actor=actor, summary=summarize_change(cur.policy, new),
                                                base_version=cur.version)
    return SaveResult(saved.version, saved.summary, policy_warnings(new), obj)
