"""Reference-cycle checks for the hot-path tests (issue 19): what the collector would free."""

from __future__ import annotations

import collections
import gc


def cycle_garbage(run) -> list:
    """What the collector finds unreachable (cycles) among the objects `run()` leaves behind."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def summary(garbage: list) -> list:
    return collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage).most_common(12)


def not_the_stdlib_transports(garbage: list) -> list:
    """The garbage without the standard loop's own per-connection cycle (CPython 3.11's
    _SelectorSocketTransport keeps a bound method of itself) and what only it holds. `mxgate
    serve` runs on uvloop (a default dependency on Linux), whose transports make none."""
    import asyncio.selector_events as selector_events

    ids = {id(o) for o in garbage}
    todo = [o for o in garbage if isinstance(o, selector_events._SelectorTransport)]
    held = {id(o) for o in todo}
    while todo:
        for ref in gc.get_referents(todo.pop()):
            if id(ref) in ids and id(ref) not in held:
                held.add(id(ref))
                todo.append(ref)
    return [o for o in garbage if id(o) not in held]
