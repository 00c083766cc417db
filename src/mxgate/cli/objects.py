"""Shared machinery for the noun commands (connector, domain, mailbox): list, show, new, set, remove.

One code path: each verb edits the policy with policy/edit.py and saves a new version (none when\nnothing changed).
"""

from __future__ import annotations

from typing import Any

from mxgate.cli.common import handle_errors, out, policy_store, print_json, print_table
from mxgate.cli.policy_cmds import save_change
from mxgate.policy import edit
from mxgate.policy.model import object_to_dict
from mxgate.wording import plural


def save_edit(kind: str, op: str, ident: str, values: dict[str, Any] | None = None) -> None:
    store = policy_store()
    cur = store.current()
    if op == "new":
        new = edit.add(cur.policy, kind, values or {})
    elif op == "set":
        new = edit.change(cur.policy, kind, ident, values or {})
    else:
        new = edit.remove(cur.policy, kind, ident)
    save_change(store, cur, new)


def list_objects(kind: str, columns: list[str], json_out: bool) -> None:
    attr, _key, human = edit.KINDS[kind]
    items = getattr(policy_store(read=True).current().policy, attr)
    if json_out:
        print_json([object_to_dict(o) for o in items])
        return
    rows = []
    for o in items:
        d = object_to_dict(o)
        rows.append([", ".join(map(str, d[c])) if isinstance(d[c], list) else d[c] for c in columns])
    print_table(plural(human).capitalize(), columns, rows)


def show_object(kind: str, ident: str, json_out: bool) -> None:
    obj = edit.find(policy_store(read=True).current().policy, kind, ident)
    data = object_to_dict(obj)
    if json_out:
        print_json(data)
        return
    print_table(f"{edit.KINDS[kind][2]} {ident}", ["field", "value"],
                [[k, ", ".join(map(str, v)) if isinstance(v, list) else v] for k, v in data.items()])


def given(**values: Any) -> dict[str, Any]:
    """Only the options the admin actually passed."""
    return {k: v for k, v in values.items() if v is not None}


__all__ = ["handle_errors", "given", "list_objects", "out", "save_edit", "show_object"]
