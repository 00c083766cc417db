"""Retry schedule: Postfix-like defaults, cap, expiry, configurability."""

from __future__ import annotations

import pytest

from mxgate.queue.scheduler import RetryPolicy, backoff, delay_warning_due, expires_at, next_attempt

DAY = 86400.0


def test_default_sequence_doubles_then_caps():
    policy = RetryPolicy()
    assert [backoff(policy, n) for n in range(1, 9)] == [300, 600, 1200, 2400, 4000, 4000, 4000, 4000]


def test_next_attempt_walks_the_sequence_from_now():
    policy = RetryPolicy()
    arrival = 1_000_000.0
    now = arrival
    gaps = []
    for attempts in range(1, 7):
        nxt = next_attempt(policy, arrival, attempts, now)
        gaps.append(nxt - now)
        now = nxt
    assert gaps == [300, 600, 1200, 2400, 4000, 4000]


def test_expires_after_five_days():
    policy = RetryPolicy()
    arrival = 0.0
    assert expires_at(policy, arrival) == 5 * DAY
    assert next_attempt(policy, arrival, 40, 5 * DAY) is None
    assert next_attempt(policy, arrival, 40, 5 * DAY + 1) is None
    # Just before expiry the last attempt is pulled in to the deadline, not past it.
    assert next_attempt(policy, arrival, 40, 5 * DAY - 10) == 5 * DAY
    assert next_attempt(policy, arrival, 40, 4 * DAY) == 4 * DAY + 4000


def test_simulated_queue_life_gives_up_within_max_age():
    policy = RetryPolicy()
    now, attempts = 0.0, 0
    while True:
        attempts += 1
        nxt = next_attempt(policy, 0.0, attempts, now)
        if nxt is None:
            break
        assert nxt > now
        now = nxt
    assert now == 5 * DAY
    assert 100 < attempts < 120  # ~5 days of 4000 s retries after the ramp


def test_never_tried_is_due_now():
    assert next_attempt(RetryPolicy(), 10.0, 0, 12.0) == 12.0


def test_tiny_policy_for_tests():
    policy = RetryPolicy(first_retry=0.1, multiplier=3, max_backoff=0.5, max_age=2)
    assert [backoff(policy, n) for n in (1, 2, 3)] == pytest.approx([0.1, 0.3, 0.5])
    assert next_attempt(policy, 0.0, 1, 1.0) == pytest.approx(1.1)
    assert next_attempt(policy, 0.0, 5, 2.0) is None


def test_huge_attempt_counts_do_not_overflow():
    assert backoff(RetryPolicy(multiplier=10), 100_000) == 4000


def test_constant_backoff_with_multiplier_one():
    policy = RetryPolicy(first_retry=60, multiplier=1, max_backoff=60)
    assert [backoff(policy, n) for n in (1, 2, 10)] == [60, 60, 60]


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"first_retry": 0}, "first_retry"),
        ({"max_age": -1}, "max_age"),
        ({"multiplier": 0.5}, "multiplier"),
        ({"first_retry": 500, "max_backoff": 100}, "max_backoff"),
        ({"warn_after": 0}, "warn_after"),
        ({"max_backoff": float("inf")}, "max_backoff"),
    ],
)
def test_invalid_policies_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**kwargs)


def test_delay_warning():
    policy = RetryPolicy(warn_after=4 * 3600)
    assert not delay_warning_due(policy, 0, 3600, already_warned=False)
    assert delay_warning_due(policy, 0, 4 * 3600, already_warned=False)
    assert not delay_warning_due(policy, 0, 5 * 3600, already_warned=True)
    assert not delay_warning_due(RetryPolicy(), 0, 4 * DAY, already_warned=False)


# --- host backoff: once per outage window (issue 15) -------------------------------------------

def test_concurrent_failures_of_one_outage_grow_the_backoff_once():
    """Nine deliveries in flight when the host went down: one outage, one base delay (it used to
    be 0.2 s * 2**8 = 51 s, and the default 30 s straight to the cap)."""
    from mxgate.queue.scheduler import HostHealth

    for base in (0.2, 30.0):
        health = HostHealth(base)
        started = 100.0
        for i in range(9):
            health.failed("mbx:25", 100.5 + i * 0.01, started)
        assert health.delay("mbx:25") == base
        assert not health.usable("mbx:25", 100.5 + base - 0.01) and health.usable("mbx:25", 100.5 + base)


def test_backoff_grows_once_per_window_and_resets_on_success():
    from mxgate.queue.scheduler import HostHealth

    health = HostHealth(1.0, cap=5.0)
    now = 0.0
    delays = []
    for _ in range(5):  # a probe after each window fails again
        health.failed("h", now, now)
        health.failed("h", now + 0.3, now - 0.5)  # in flight before this failure was seen: ignored
        delays.append(health.delay("h"))
        assert not health.usable("h", now + health.delay("h") - 0.01)
        now += health.delay("h")
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]
    health.succeeded("h")
    assert health.usable("h", now) and health.delay("h") == 0.0


def test_host_backoff_never_exceeds_the_message_retry_backoff():
    from mxgate.queue.scheduler import MAX_HOST_BACKOFF, HostHealth

    assert HostHealth.for_queue(0.2, RetryPolicy(first_retry=0.3, max_backoff=1.0)).cap == 1.0
    assert HostHealth.for_queue(30.0, RetryPolicy()).cap == MAX_HOST_BACKOFF  # 4000 s retries: 10 min
    assert HostHealth.for_queue(30.0, RetryPolicy(first_retry=5, max_backoff=10)).cap == 30.0
