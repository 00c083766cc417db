"""Long operations (the lock-down verifier) run as background jobs whose progress the UI polls.

Owns: job ids, progress counters and results, kept in memory for an hour. A job is a coroutine
`fn(progress)` where `progress(done, total, message)` may be called any number of times.
Must not know what a job does or how it is shown.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

log = logging.getLogger("mxgate.admin.jobs")

KEEP_SECONDS = 3600
Progress = Callable[[int, int, str], None]


@dataclass
class Job:
    id: str
    kind: str
    actor: str
    started_at: float = field(default_factory=time.time)
    state: str = "running"  # running | done | failed
    done: int = 0
    total: int = 0
    message: str = "starting"
    result: Any = None
    error: str = ""
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "done": self.done, "total": self.total,
                "message": self.message, "error": self.error, "result": self.result,
                "started_at": self.started_at, "finished_at": self.finished_at}


class Jobs:
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task] = set()

    def start(self, kind: str, actor: str, fn: Callable[[Progress], Awaitable[Any]]) -> Job:
        self._forget_old()
        job = Job(secrets.token_hex(6), kind, actor)
        self._jobs[job.id] = job

        def progress(done: int, total: int, message: str) -> None:
            job.done, job.total, job.message = done, total, message

        async def run() -> None:
            try:
                job.result = await fn(progress)
                job.state = "done"
                job.message = "finished"
            except Exception as exc:  # shown to the admin; the job's own errors are ours to report
                log.warning("job %s (%s) failed: %s", job.id, kind, exc)
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            finally:
                job.finished_at = time.time()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    async def wait(self, job_id: str, timeout: float = 60.0) -> Job | None:
        end = time.monotonic() + timeout
        job = self._jobs.get(job_id)
        while job is not None and job.state == "running" and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return job

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _forget_old(self) -> None:
        cutoff = time.time() - KEEP_SECONDS
        for jid in [j.id for j in self._jobs.values() if j.finished_at and j.finished_at < cutoff]:
            del self._jobs[jid]
