"""Prometheus metrics for every role of this process, served at /metrics by the admin centre.

Owns: the registry and a tiny module-level API the SMTP roles call (`metrics.refused(reason)`,
`metrics.accepted()`, ...), so roles never import prometheus_client themselves and stay cheap
to call (one counter increment). Must not know SMTP or the store: gauges that need state
(queue depth, policy version) are read at scrape time through callbacks registered by the
process that owns that state.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

SESSIONS = Counter("mxgate_smtp_sessions", "SMTP sessions opened, by role", ["role"], registry=REGISTRY)
ACCEPTED = Counter("mxgate_messages_accepted", "Messages accepted (250 after DATA), by role", ["role"], registry=REGISTRY)
REFUSED = Counter("mxgate_messages_refused", "Refused attempts, by stable reason code (smtp/replies.py)",
                  ["reason"], registry=REGISTRY)
DELIVERED = Counter("mxgate_messages_delivered", "Copies delivered to a Maildir or relayed downstream", registry=REGISTRY)
DEFERRED = Counter("mxgate_messages_deferred", "Delivery attempts deferred for a retry", registry=REGISTRY)
QUARANTINED = Counter("mxgate_messages_quarantined", "Messages put into quarantine", registry=REGISTRY)
# Check latencies: SPF/DKIM/DMARC/DNSBL are bounded by the DNS timeout, so 10 s is the top bucket.
CHECK_SECONDS = Histogram("mxgate_check_seconds", "Time spent in one check (spf, dkim, dmarc, dnsbl, clamd...)",
                          ["check"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                          registry=REGISTRY)
QUEUE_DEPTH = Gauge("mxgate_queue_depth", "Messages in the gateway queue, by queue directory", ["queue"], registry=REGISTRY)
POLICY_VERSION = Gauge("mxgate_policy_version", "Policy version this process enforces", registry=REGISTRY)
TLS_EXPIRY_DAYS = Gauge("mxgate_tls_certificate_expiry_days",
                        "Days until a certificate the node serves expires (negative: expired): each listener's "
                        "(mailbox, gateway, submission) and the gateway's client certificate (gateway-client)",
                        ["certificate"], registry=REGISTRY)
LOGIN_FAILURES = Counter("mxgate_admin_login_failures", "Failed admin centre logins", registry=REGISTRY)

# Scrape-time readers: name -> callable returning {label: value}; set by whoever owns the state.
_queue_reader: Callable[[], dict[str, int]] | None = None
_policy_reader: Callable[[], int] | None = None
_tls_reader: Callable[[], dict[str, float]] | None = None


def session_opened(role: str = "mailbox") -> None:
    SESSIONS.labels(role).inc()


def accepted(role: str = "mailbox") -> None:
    ACCEPTED.labels(role).inc()


def refused(reason: str) -> None:
    REFUSED.labels(reason or "unknown").inc()


def delivered(count: int = 1) -> None:
    DELIVERED.inc(count)


def deferred(count: int = 1) -> None:
    DEFERRED.inc(count)


def quarantined() -> None:
    QUARANTINED.inc()


def observe_check(check: str, seconds: float) -> None:
    CHECK_SECONDS.labels(check).observe(seconds)


@contextmanager
def timed(check: str) -> Iterator[None]:
    """`with metrics.timed("spf"): ...` records the check's latency even when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_check(check, time.perf_counter() - start)


def set_queue_reader(reader: Callable[[], dict[str, int]] | None) -> None:
    global _queue_reader
    _queue_reader = reader


def set_policy_reader(reader: Callable[[], int] | None) -> None:
    global _policy_reader
    _policy_reader = reader


def set_tls_reader(reader: Callable[[], dict[str, float]] | None) -> None:
    global _tls_reader
    _tls_reader = reader


def render() -> tuple[bytes, str]:
    """The exposition text; state gauges are refreshed first so a scrape is never stale."""
    if _queue_reader is not None:
        try:
            for queue, depth in _queue_reader().items():
                QUEUE_DEPTH.labels(queue).set(depth)
        except Exception:  # a scrape must not fail because the queue is being recovered
            pass
    if _policy_reader is not None:
        try:
            POLICY_VERSION.set(_policy_reader())
        except Exception:
            pass
    if _tls_reader is not None:
        try:  # computed at scrape time: a value set at load time would stop counting down
            for name, days in _tls_reader().items():
                TLS_EXPIRY_DAYS.labels(name).set(round(days, 3))
        except Exception:
            pass
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def value(name: str, **labels: str) -> float:
    """Current value of one sample (tests and the dashboard); 0 when never set."""
    v = REGISTRY.get_sample_value(name, labels or None)
    return float(v or 0.0)
