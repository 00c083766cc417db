"""`metrics.timed(check)` on the hot path (issue 19): it observes the check's latency in
mxgate_check_seconds once per use, also when the check raises (the exception goes on), and it is
a plain class context manager — @contextmanager's generator cost ~4 µs a use, ~8 uses a gateway
message."""

from __future__ import annotations

import contextlib

import pytest

from mxgate import metrics


def _count(check: str) -> float:
    return metrics.REGISTRY.get_sample_value("mxgate_check_seconds_count", {"check": check}) or 0.0


def _sum(check: str) -> float:
    return metrics.REGISTRY.get_sample_value("mxgate_check_seconds_sum", {"check": check}) or 0.0


def test_each_use_observes_one_latency_also_when_the_check_raises():
    before = _count("timed-test")
    with metrics.timed("timed-test"):
        pass
    with pytest.raises(KeyError):
        with metrics.timed("timed-test"):
            raise KeyError("the check failed")
    assert _count("timed-test") - before == 2
    assert _sum("timed-test") >= 0.0


def test_timed_is_not_a_generator_context_manager():
    cm = metrics.timed("timed-test")
    assert not isinstance(cm, contextlib._GeneratorContextManager)
    assert not hasattr(cm, "__dict__")  # slots: two fields, nothing allocated beside them
