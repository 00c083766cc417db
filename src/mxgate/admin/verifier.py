""""Test lock-down" from the admin centre: run probe/verify.py's matrix against this node's own
mailbox listener as a background job, reporting progress row by row.

Owns: choosing the targets (the node's first IPv4 and IPv6 mailbox addresses, its generated CA
for STARTTLS) and feeding per-row progress to jobs.py. Must not judge rows (verify.py does).
"""

from __future__ import annotations

import asyncio
from typing import Any

from mxgate.errors import ConfigError
from mxgate.names import parse_hostport


def _targets(node):
    from mxgate.probe.verify import Target

    listener = node.listeners.get("mailbox") if node is not None else None
    if listener is None or not listener.addresses:
        raise ConfigError("this node runs no mailbox server to verify")
    v4 = v6 = None
    for addr in listener.addresses:
        host, port = parse_hostport(addr)
        if ":" in host:
            v6 = v6 or Target(host, port)
        else:
            v4 = v4 or Target(host, port)
    return v4 or v6, v6 if v4 else None


def start_verify(st, actor: str):
    """Start the job; returns it at once (the page polls /verify/jobs/<id>)."""
    from mxgate.probe.verify import VerifySettings, plan_matrix, render_json, run_row

    target, target6 = _targets(st.node)
    settings = VerifySettings(target=target, target6=target6, ca_file=str(st.node.certs.ca_cert))
    rows = plan_matrix(st.policy_store.current().policy, settings)

    async def job(progress) -> dict[str, Any]:
        results = []
        progress(0, len(rows), "starting")
        sem = asyncio.Semaphore(4)

        async def one(row):
            async with sem:
                r = await run_row(row)
            results.append(r)
            progress(len(results), len(rows), f"{row.name}: {r.status}")
            return r

        ordered = await asyncio.gather(*(one(r) for r in rows))
        return render_json(list(ordered))

    return st.jobs.start("verify", actor, job)
