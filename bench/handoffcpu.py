"""CPU of one loop → thread → loop hand-off as the gateway makes them, in process (issue 19).

`python3 bench/handoffcpu.py [--count 3000] [--callers 20] [--loop uvloop|asyncio]`, with
PYTHONPATH at the tree to measure (two trees compared pair by pair, as bench/authcpu.py).
Each kind of hop runs a trivial job `count` times, `callers` at once, and prints the process's
CPU (`time.process_time()`, not wall time: the machine is shared) per hop, and the loop thread's
share (`time.thread_time()`: the serialised part):
- `pipeline`: a content check's hop (filters/pipeline.py `Pipeline._in_worker`: per-client slot,
  budget, one timer, the worker pool);
- `to_thread`: `asyncio.to_thread` (the loop's default executor);
- `checkthreads`: the shared hand-off threads (mxgate/handoff.py `CheckThreads.run`).
Then `message`: the gateway's per-message hops at P3's defaults (spf, dkim, rdns and the MIME
walk at once — and clamd without a socket, in a tree that hands it over — then dmarc, through
the pipeline; the ARC seal as server/gateway.py hands it over),
trivial work, one message per caller at a time: the hand-off overhead of one message.
Must not know: what the checks do (the jobs are trivial on purpose).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):  # with PYTHONPATH set, that tree is measured (an A/B's base)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def _noop(*args):
    return args


async def measure(kind: str, count: int, callers: int) -> float:
    from mxgate.filters.pipeline import Pipeline
    from mxgate.filters.result import Budget

    pipeline = Pipeline(workers=8, per_client=4)
    threads = _threads()
    hops_per_job = 1

    if kind == "pipeline":
        async def job(i):
            state, _ = await pipeline._in_worker(f"192.0.2.{i % callers}", Budget(30), _noop, i)
            assert state == "ok"
    elif kind == "to_thread":
        async def job(i):
            await asyncio.to_thread(_noop, i)
    elif kind == "checkthreads":
        async def job(i):
            await threads.run(_noop, (i,), 30.0, None)
    else:  # message: the check hops (spf, dkim, rdns ∥ walk, then dmarc; clamd too where the tree
        # still hands it over without a socket) + the seal
        from mxgate.filters import clamd

        parallel = 4 if hasattr(clamd, "on_loop") else 5
        hops_per_job = parallel + 2

        async def check(i):
            state, _ = await pipeline._in_worker(f"192.0.2.{i % callers}", Budget(30), _noop, i)
            assert state == "ok"

        async def job(i):
            await asyncio.gather(*(check(i) for _ in range(parallel)))
            await check(i)
            await seal_hop(pipeline, i)

    async def caller(n):
        for i in range(n, count, callers):
            await job(i)

    await asyncio.gather(*(caller(n) for n in range(callers)))  # warm: threads started
    c0, l0 = time.process_time(), time.thread_time()  # this coroutine runs on the loop's thread
    await asyncio.gather(*(caller(n) for n in range(callers)))
    spent, on_loop = time.process_time() - c0, time.thread_time() - l0
    pipeline.close()
    threads.stop()
    return spent / count * 1e6, on_loop / count * 1e6, hops_per_job


def _threads():
    try:
        from mxgate.handoff import CheckThreads
    except ImportError:  # the tree before this work: the mailbox side's copy
        from mxgate.auth.pipeline import CheckThreads
    return CheckThreads(count=8, name="bench-handoff")


async def seal_hop(pipeline, i):
    """The gateway's ARC hop as each tree makes it: `Pipeline.run_heavy` (HEAVY_SLOTS threads of
    its own) when the tree has it, else `heavy_slot()` around `asyncio.to_thread`."""
    if hasattr(pipeline, "run_heavy"):
        return await pipeline.run_heavy(_noop, i)
    async with pipeline.heavy_slot():
        return await asyncio.to_thread(_noop, i)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--callers", type=int, default=20)
    ap.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    ap.add_argument("--kinds", default="pipeline,to_thread,checkthreads,message")
    args = ap.parse_args()
    if args.loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    import mxgate
    print(f"tree: {Path(mxgate.__file__).parent.parent}")
    for kind in args.kinds.split(","):
        us, loop_us, hops = asyncio.run(measure(kind, args.count, args.callers))
        per = "message" if kind == "message" else "hop"
        print(f"{kind}: {us:.1f} µs CPU per {per}, {loop_us:.1f} on the loop's thread ({hops} hop(s), "
              f"{args.callers} callers, {args.count} jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
