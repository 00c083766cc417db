"""CheckThreads' counters (mxgate/handoff.py `jobs`, `wakeups`) stay exact when two threads hand
over at once (several loops share one set of threads): every interleaving of two hand-overs is
tried, the first thread held before each of its bytecode instructions in handoff.py in turn
while the second runs to the end. No sleeps: the threads wait on events.

CPython 3.11 happens not to switch threads between the read and the write of `x += 1`, so the
lost update this guards against needs a switch there (sys.settrace makes one): a free-threaded
build, or a later interpreter that checks for switches elsewhere, gets it without asking."""

from __future__ import annotations

import queue
import sys
import threading

from mxgate import handoff
from mxgate.handoff import CheckThreads


def _every_switch_point(setup, may_pause=lambda: True) -> int:
    """setup() -> (first, second, check). For k = 1, 2, ...: first() runs in a thread held before
    its k-th instruction inside handoff.py (the next one where may_pause() holds), second() runs
    whole in this thread, first() is let go; then check(). Ends when first() runs out of
    instructions before k; returns how many points were tried."""
    k = 0
    while True:
        k += 1
        first, second, check = setup()
        held, go = threading.Event(), threading.Event()
        state = {"seen": 0, "paused": False}

        def local(frame, event, arg):
            if event == "opcode" and not state["paused"]:
                state["seen"] += 1
                if state["seen"] >= k and may_pause():
                    state["paused"] = True
                    held.set()
                    assert go.wait(10)
            return local

        def tracer(frame, event, arg):
            if frame.f_code.co_filename != handoff.__file__:
                return None
            frame.f_trace_opcodes = True
            return local

        def run_first():
            sys.settrace(tracer)
            try:
                first()
            finally:
                sys.settrace(None)
                held.set()

        thread = threading.Thread(target=run_first)
        thread.start()
        assert held.wait(10)
        if not state["paused"]:  # first() ended before its k-th instruction: all were tried
            thread.join(10)
            return k - 1
        second()
        go.set()
        thread.join(10)
        assert not thread.is_alive()
        check()


def test_jobs_counts_every_hand_over_of_two_threads_at_once():
    threads = CheckThreads(count=2, name="t")  # a thread per job
    threads.submit(lambda: None)  # started: the interleavings below are hand-overs only

    def setup():
        before = threads.jobs
        return (lambda: threads.submit(lambda: None), lambda: threads.submit(lambda: None),
                lambda: _equal(threads.jobs - before, 2))

    try:
        assert _every_switch_point(setup) >= 5
    finally:
        threads.stop()


class _CountedTokens:
    """The drain's wake-up queue, counting the tokens put (what `wakeups` must equal)."""

    def __init__(self) -> None:
        self.queue, self.lock, self.put_count = queue.SimpleQueue(), threading.Lock(), 0

    def put(self, item) -> None:
        with self.lock:
            self.put_count += 1
        self.queue.put(item)


def test_wakeups_counts_every_thread_woken_by_two_threads_at_once():
    """Two loops' wakes of more threads for jobs held up (the stall watch's `more`): each wakes one
    (no thread takes the tokens here), and `wakeups` counts both."""
    threads = CheckThreads(count=8, name="t", stall=60)
    drains: list = []

    def setup():
        drain = handoff._Drain(_CountedTokens())  # type: ignore[arg-type]
        drain.jobs.append(lambda: None)  # waiting jobs: a wake is due
        drains.append(drain)
        before = threads.wakeups
        return (lambda: threads._wake(drain, more=True), lambda: threads._wake(drain, more=True),
                lambda: _equal((threads.wakeups - before, drain.active), (drain.work.put_count, 2)))

    # Not inside the drain's lock, which the second thread would wait for (the lock is the point).
    assert _every_switch_point(setup, may_pause=lambda: not drains[-1].lock.locked()) >= 5


def _equal(got, expected) -> None:
    assert got == expected
