"""`metrics.observe_check` (issue 19, session 7) updates mxgate_check_seconds exactly as the
Histogram child's own `observe` does — the same bucket counts and sum for every amount: the
bounds themselves, between them, below the first, past the last, negative, infinite and NaN —
so a prometheus_client whose histogram internals change is caught here, not in a dashboard."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from mxgate import metrics

BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _samples(registry: CollectorRegistry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in registry.collect() for s in family.samples if not s.name.endswith("_created")}


def _amounts() -> list[float]:
    rng = random.Random(7)
    out = [0.0, -0.5, -math.inf, 1e-9, 11.0, 1e6, *BOUNDS]  # (+inf too would make both sums NaN)
    out += [b * f for b in BOUNDS for f in (0.999999, 1.000001)]
    out += [rng.uniform(0, 12) for _ in range(500)] + [rng.expovariate(1000) for _ in range(500)]
    return out


def _pair():
    registries = CollectorRegistry(), CollectorRegistry()
    hists = [Histogram("h", "test", ["check"], buckets=BOUNDS, registry=r) for r in registries]
    return registries, [h.labels("dkim") for h in hists]


def test_the_observer_counts_every_amount_as_observe_does():
    (ours, theirs), (child, reference) = _pair()
    observe = metrics._observer(child)
    assert observe != child.observe  # the short path is taken for this prometheus_client
    for amount in _amounts():
        observe(amount)
        reference.observe(amount)
    assert _samples(ours) == _samples(theirs)


def test_nan_and_infinity_are_counted_as_observe_counts_them():
    (ours, theirs), (child, reference) = _pair()
    for amount in (math.nan, math.inf, 0.2):
        metrics._observer(child)(amount)
        reference.observe(amount)
    a, b = _samples(ours), _samples(theirs)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def test_a_child_of_another_shape_is_observed_by_observe():
    class Other:
        def observe(self, amount):
            self.seen = amount

    other = Other()
    assert metrics._observer(other) == other.observe


def test_observe_check_lands_in_the_node_registry():
    def count() -> float:
        return metrics.REGISTRY.get_sample_value("mxgate_check_seconds_count", {"check": "observer-test"}) or 0.0

    def bucket(le: str) -> float:
        return metrics.REGISTRY.get_sample_value("mxgate_check_seconds_bucket", {"check": "observer-test", "le": le})

    before, fast = count(), bucket("0.001") or 0.0
    metrics.observe_check("observer-test", 0.0004)
    metrics.observe_check("observer-test", 0.3)
    assert count() - before == 2 and bucket("0.001") - fast == 1 and bucket("0.25") == bucket("0.1")
