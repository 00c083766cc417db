"""`mxgate queue` on the shared database queue (`[gateway] queue = "database"`): any node's CLI lists,
shows, retries and deletes the same rows the gateways lease."""

from __future__ import annotations

import asyncio
import json
import time

from clusterkit import mxgate
from mxgate.queue.dbspool import DbSpool


def test_queue_cli_reads_and_changes_the_database_queue(tmp_path, store_url, engine_for):
    engine = engine_for(store_url)
    spool = DbSpool.open(engine, "gw-a", tmp_path / "spool")
    later = time.time() + 3600
    entry = asyncio.run(spool.enqueue("s@fabrikam.test", ["alice@contoso.test"],
                                      b"Subject: queued in the database\r\n\r\nx\r\n", {"trace_id": "t1"}))
    config = tmp_path / "node.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[gateway]\nqueue = "database"\n')
    home = tmp_path / "cli-home"

    listed = json.loads(mxgate("--config", str(config), "queue", "list", "--json", home=home).stdout)
    assert [r["id"] for r in listed] == [entry.queue_id]
    shown = mxgate("--config", str(config), "queue", "show", entry.queue_id, "--json", home=home)
    assert shown.returncode == 0 and "queued in the database" in json.loads(shown.stdout)["headers"]

    # Push it into the future, then an admin retry makes it due now.
    asyncio.run(spool.retry_now(spool.get(entry.queue_id), later))
    assert spool.get(entry.queue_id).next_attempt == later
    r = mxgate("--config", str(config), "queue", "retry", entry.queue_id, home=home)
    assert r.returncode == 0, r.stderr
    assert spool.get(entry.queue_id).next_attempt <= time.time()

    r = mxgate("--config", str(config), "queue", "delete", entry.queue_id, home=home)
    assert r.returncode == 0, r.stderr
    assert spool.get(entry.queue_id) is None
