"""The node's DNS resolver, shared by SPF, DKIM, DMARC, ARC, DNSBL and MX routing.

Owns: the one resolver factory (`make_resolver`: configured servers, or the system's
/etc/resolv.conf when none) whose every lookup is bounded in time, installing it as
dnspython's process-wide default (pyspf, dkimpy and authheaders have no resolver argument and
resolve through `dns.resolver.default_resolver`), its async view for the outbound queue's MX
lookups, and the TXT lookup callable (`dnsfunc`) that dkimpy's verify/arc_verify accept.

DNS failures cost little (issue 15), on either path: answers are cached for their TTL;
identical lookups in flight are coalesced into one query; a negative answer without an SOA
(RFC 2308 §5 would allow no caching) is still cached for NEGATIVE_FLOOR seconds; an unanswered
query is sent again every RETRY_INTERVAL within the lookup's lifetime; and when the resolver
fails, an expired answer is served for STALE_TTL seconds (RFC 8767 serve-stale).

Must not know: what the records mean. A lookup that could not be answered in time, or whose
servers all failed, raises `DnsTemporaryError` — distinct from "no such record" (None) so the
callers can report `temperror` (RFC 8601 §2.7) rather than `fail`. The exception is
deliberately *not* a dkimpy `DKIMException`: dkimpy swallows those into a plain `False`.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import dns.exception
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver

log = logging.getLogger("mxgate.dns")

DNS_PORT = 53  # RFC 1035 §4.2
DEFAULT_TIMEOUT = 5.0  # seconds for a whole lookup (all servers, all retries)
RETRY_INTERVAL = 1.0  # seconds per attempt: an unanswered UDP query is asked again within the lifetime
NEGATIVE_FLOOR = 30.0  # seconds a negative answer without an SOA is cached
STALE_TTL = 30.0  # RFC 8767 §4: an expired answer served on failure counts as fresh this long
MAX_STALE = 86400.0  # RFC 8767 §5: expired answers are kept up to a day (it suggests 1-3 days)
MAX_TTL = 86400.0  # longer TTLs are capped, as resolvers do (RFC 8767 §4 caps at 7 days)


class DnsTemporaryError(Exception):
    """The DNS could not answer now (timeout, SERVFAIL from every server)."""


def parse_server(server: str) -> tuple[str, int]:
    """"host", "host:port", "[v6]:port" or a bare IPv6 literal -> (ip, port)."""
    text = server.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DNS_PORT
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = int(port_text)
    else:
        host, port = text, DNS_PORT
    ipaddress.ip_address(host)  # resolvers are addressed by IP; a name here is a config error
    if not 0 < port < 65536:
        raise ValueError(f"DNS server port out of range: {server!r}")
    return host, port


class NotCached(BaseException):
    """A lookup under `cache_only()` whose fresh answer is not in the cache. A BaseException so
    that no `except Exception` in a library (pyspf, the checks) turns it into a result."""


class _CacheOnly(threading.local):
    state: "CacheOnlyLook | None" = None


@dataclass
class CacheOnlyLook:
    missed: bool = False  # some lookup was not answered from the cache (even if the caller swallowed NotCached)


_CACHE_ONLY = _CacheOnly()


class cache_only:  # noqa: N801 - used as `with cache_only() as look:`
    """In this thread, until the block ends: every CachingResolver lookup answers from its cache
    (fresh entries only) or raises NotCached — it never asks and never waits. For work that may
    run on the event loop when all its answers are known (issue 19: a check's thread hand-off
    costs more than the check), and again in a worker otherwise. A class, not @contextmanager,
    whose generator and wrapper cost ~1.5 µs a use (four per gateway message)."""

    __slots__ = ("_previous",)

    def __enter__(self) -> CacheOnlyLook:
        look = CacheOnlyLook()
        self._previous, _CACHE_ONLY.state = _CACHE_ONLY.state, look
        return look

    def __exit__(self, *exc) -> bool:
        _CACHE_ONLY.state = self._previous
        return False


def answers_from_cache(resolver: Any) -> bool:
    """Whether `cache_only()` can answer for `resolver` and for pyspf's (the process default):
    both this CachingResolver, with a cache."""
    return (isinstance(resolver, CachingResolver) and resolver.answers is not None
            and dns.resolver.default_resolver is resolver)


@dataclass
class _Cached:
    value: Any  # a dns.resolver.Answer, or the NXDOMAIN exception
    expires: float  # fresh until (monotonic)
    stale_until: float  # may be served on failure until (monotonic)


@dataclass
class _Flight:
    """One lookup in progress; identical lookups wait for it instead of asking again."""

    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


class AnswerCache:
    """Answers by (name, type, class), least recently used dropped first; thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[tuple, _Cached] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> _Cached | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple, item: _Cached) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class CachingResolver(dns.resolver.Resolver):
    """dnspython's Resolver with the node's answer cache, coalescing, short retries and
    serve-stale in `resolve` (every other entry point — `query`, pyspf's module-level calls —
    goes through it). `clock` is injectable so tests need no sleeping."""

    def __init__(self, *, configure: bool, cache_size: int, clock: Callable[[], float] = time.monotonic):
        super().__init__(configure=configure)
        self.cache = None  # dnspython's own cache is replaced by `answers` (negative floor, stale)
        self.answers = AnswerCache(cache_size) if cache_size > 0 else None
        self.clock = clock
        self._flights: dict[tuple, _Flight] = {}
        self._flights_lock = threading.Lock()
        self.stats = {"queries": 0, "hits": 0, "coalesced": 0, "stale": 0, "negative_floor": 0}

    def resolve(self, qname, rdtype=dns.rdatatype.A, rdclass=dns.rdataclass.IN, tcp=False, source=None,
                raise_on_no_answer=True, source_port=0, lifetime=None, search=None):
        look = _CACHE_ONLY.state
        if self.answers is None:
            if look is not None:
                look.missed = True
                raise NotCached(qname)
            self.stats["queries"] += 1
            return super().resolve(qname, rdtype, rdclass, tcp, source, raise_on_no_answer, source_port,
                                   lifetime, search)
        if isinstance(qname, dns.name.Name):
            name, labels = qname, _labels_key(qname)
        else:
            name, labels = _named(qname)
        # Keyed by the name's lower-cased labels, not the Name: dnspython hashes a Name in Python,
        # a character at a time (~3-8 µs, twice per hit), a tuple of bytes in C (issue 19).
        key = (labels, _rdtype(rdtype), _rdclass(rdclass))
        cached = self.answers.get(key)
        if cached is not None and cached.expires > self.clock():
            self.stats["hits"] += 1
            return _deliver(cached.value, raise_on_no_answer)
        if look is not None:
            look.missed = True
            raise NotCached(qname)
        with self._flights_lock:
            flight = self._flights.get(key)
            leader = flight is None
            if leader:
                flight = self._flights[key] = _Flight()
        if not leader:
            self.stats["coalesced"] += 1
            if not flight.done.wait(self.lifetime if lifetime is None else lifetime):
                raise dns.resolver.LifetimeTimeout(timeout=self.lifetime if lifetime is None else lifetime, errors=[])
            if flight.error is not None:
                raise flight.error
            return _deliver(flight.value, raise_on_no_answer)
        try:
            flight.value = self._ask(key, name, cached, tcp, source, source_port, lifetime)
            return _deliver(flight.value, raise_on_no_answer)
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            flight.done.set()
            with self._flights_lock:
                self._flights.pop(key, None)

    def _ask(self, key: tuple, name: dns.name.Name, cached: _Cached | None, tcp, source, source_port, lifetime):
        _, rdtype, rdclass = key
        self.stats["queries"] += 1
        try:
            answer = super().resolve(name, rdtype, rdclass, tcp, source, False, source_port, lifetime, False)
        except dns.resolver.NXDOMAIN as exc:
            self._store(key, exc, _negative_ttl(exc.response(name) if name in exc.qnames() else None))
            return exc
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            now = self.clock()
            if cached is not None and cached.stale_until > now:  # RFC 8767 §4: serve stale
                self.stats["stale"] += 1
                cached.expires = now + STALE_TTL  # and do not ask again for a while
                log.info("DNS %s %s: %s; serving the expired answer", name, rdtype.name, exc.__class__.__name__)
                return cached.value
            raise
        if answer.rrset is None:
            ttl = _negative_ttl(answer.response)
        else:
            ttl = max(0.0, answer.expiration - time.time())
        self._store(key, answer, ttl)
        return answer

    def _store(self, key: tuple, value: Any, ttl: float | None) -> None:
        if ttl is None:
            self.stats["negative_floor"] += 1
            ttl = NEGATIVE_FLOOR
        now = self.clock()
        ttl = min(ttl, MAX_TTL)
        self.answers.put(key, _Cached(value, now + ttl, now + ttl + MAX_STALE))

    @property
    def aio(self) -> "AsyncResolver":
        """The same resolver (cache, coalescing) for asyncio callers (queue/outbound.py's MX)."""
        return AsyncResolver(self)


def remember_bounded(memo: dict, key, value, limit: int) -> None:
    """memo[key] = value, the oldest entry dropped first at `limit` (the SPF and DMARC replay
    memos: what they keep is re-checked against fresh answers before use, so losing an entry
    to another thread's drop costs one evaluation, nothing more)."""
    if len(memo) >= limit:
        try:
            memo.pop(next(iter(memo)), None)
        except (StopIteration, RuntimeError):  # emptied or resized by another thread meanwhile
            pass
    memo[key] = value


def _negative_ttl(response) -> float | None:
    """RFC 2308 §5: a negative answer lives min(SOA TTL, SOA minimum); None when no SOA came."""
    for rrset in getattr(response, "authority", ()) or ():
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return float(min(rrset.ttl, rrset[0].minimum))
    return None


def _deliver(value: Any, raise_on_no_answer: bool):
    if isinstance(value, dns.resolver.NXDOMAIN):
        raise _fresh_nxdomain(value)
    if value.rrset is None and raise_on_no_answer:
        raise dns.resolver.NoAnswer(response=value.response)
    return value


def _fresh_nxdomain(cached: dns.resolver.NXDOMAIN) -> dns.resolver.NXDOMAIN:
    """A new exception equal to NXDOMAIN(qnames=cached.qnames(), responses=cached.responses()):
    each raise gets its own object (its traceback and context are its own), but the message is
    not formatted again (issue 19: ~10 µs of dnspython's name formatting per cached negative
    answer, one per message for a client without a PTR record)."""
    exc = dns.resolver.NXDOMAIN.__new__(dns.resolver.NXDOMAIN)
    exc.__dict__.update(cached.__dict__)
    exc.kwargs = dict(cached.kwargs)
    exc.args = cached.args
    return exc


class AsyncResolver:
    """`await resolve(...)` over a CachingResolver: cache hits answer on the loop, misses run in
    a worker thread (where identical lookups coalesce with the checks' own)."""

    def __init__(self, resolver: CachingResolver):
        self.sync = resolver

    async def resolve(self, qname, rdtype=dns.rdatatype.A, rdclass=dns.rdataclass.IN, **kwargs):
        return await asyncio.to_thread(self.sync.resolve, qname, rdtype, rdclass, **kwargs)


def make_resolver(servers: Sequence[str] = (), timeout: float = DEFAULT_TIMEOUT, cache_size: int = 0, *,
                  clock: Callable[[], float] = time.monotonic) -> CachingResolver:
    """The node's resolver: asks only `servers`, or the system's resolvers (/etc/resolv.conf)
    when none are given; every lookup ends within `timeout` s, retried every RETRY_INTERVAL.

    With `cache_size` > 0 answers are kept for their TTL (RFC 1035 §3.2.1): a node checking SPF,
    DKIM and DMARC for a stream of messages from one domain asks once, not per message."""
    resolver = CachingResolver(configure=not servers, cache_size=cache_size, clock=clock)
    if servers:  # never read /etc/resolv.conf then
        resolver.nameservers = [dns.nameserver.Do53Nameserver(*parse_server(s)) for s in servers]
    resolver.timeout = min(RETRY_INTERVAL, timeout)  # per attempt: dnspython asks again after it
    resolver.lifetime = timeout  # whole lookup: lookups never hang
    resolver.retry_servfail = False
    return resolver


def node_resolver(node) -> CachingResolver:
    """The node's one resolver ([dns] settings), made on first use and shared by every role."""
    existing = getattr(node, "resolver", None)
    if existing is None:
        d = node.settings.dns
        existing = node.resolver = make_resolver(d.servers, d.timeout, d.cache_size)
    return existing


def install_default_resolver(resolver: dns.resolver.Resolver | None) -> dns.resolver.Resolver | None:
    """Make `resolver` dnspython's default; returns the previous one (may be None)."""
    previous = dns.resolver.default_resolver
    dns.resolver.default_resolver = resolver
    return previous


@contextlib.contextmanager
def default_resolver(resolver: dns.resolver.Resolver) -> Iterator[dns.resolver.Resolver]:
    """Install `resolver` as the default for the duration of a block, then restore."""
    previous = install_default_resolver(resolver)
    try:
        yield resolver
    finally:
        install_default_resolver(previous)


def _to_name(name: bytes | str) -> dns.name.Name:
    text = name.decode("ascii", "replace") if isinstance(name, bytes) else name
    return _name_of(text)


def _labels_key(name: dns.name.Name) -> tuple[bytes, ...]:
    """What Name equality compares (RFC 4343: ASCII case-insensitive labels, absolute or not)."""
    return tuple([label.lower() for label in name.labels])


@functools.lru_cache(maxsize=8192)
def _named(text: str | bytes) -> tuple[dns.name.Name, tuple[bytes, ...]]:
    name = _name_of(text)
    return name, _labels_key(name)


_RDTYPES: dict[Any, dns.rdatatype.RdataType] = {}
_RDCLASSES: dict[Any, dns.rdataclass.RdataClass] = {}


def _rdtype(value) -> dns.rdatatype.RdataType:
    """RdataType.make(value), remembered for the few spellings callers use ("TXT", 16, TXT)."""
    known = _RDTYPES.get(value)
    if known is None:
        known = dns.rdatatype.RdataType.make(value)  # an unknown one raises, and is not kept
        if len(_RDTYPES) < 256:
            _RDTYPES[value] = known
    return known


def _rdclass(value) -> dns.rdataclass.RdataClass:
    known = _RDCLASSES.get(value)
    if known is None:
        known = dns.rdataclass.RdataClass.make(value)
        if len(_RDCLASSES) < 64:
            _RDCLASSES[value] = known
    return known


@functools.lru_cache(maxsize=8192)
def _name_of(text: str | bytes) -> dns.name.Name:
    """dns.name.from_text, remembered: a Name is immutable, and the same few names (the sender's
    SPF and DMARC records, a DKIM key) are asked for on every message."""
    return dns.name.from_text(text)


@dataclass(frozen=True)
class TxtLookup:
    """The dkimpy-style `dnsfunc(name, timeout=...) -> bytes | None`, bound to a resolver.

    Calling it returns the first TXT record's strings joined (what dkimpy expects);
    `txt_records` returns every TXT record (DMARC must see them all, RFC 7489 §6.6.3).
    """

    resolver: dns.resolver.Resolver
    timeout: float = DEFAULT_TIMEOUT

    def __call__(self, name: bytes | str, timeout: float | None = None) -> bytes | None:
        records = self.txt_records(name, timeout)
        return records[0] if records else None

    def txt_records(self, name: bytes | str, timeout: float | None = None) -> tuple[bytes, ...]:
        lifetime = self.timeout if timeout is None else min(float(timeout), self.timeout)
        try:
            qname = _to_name(name)
        except (dns.exception.DNSException, ValueError):
            return ()  # a name that cannot exist has no records (e.g. a 64-octet selector)
        try:
            answer = self.resolver.resolve(qname, dns.rdatatype.TXT, lifetime=lifetime,
                                           raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return ()
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise DnsTemporaryError(f"TXT {name!r}: {exc.__class__.__name__}") from exc
        except dns.exception.DNSException as exc:  # malformed name, bad response
            raise DnsTemporaryError(f"TXT {name!r}: {exc}") from exc
        if answer.rrset is None:
            return ()
        return tuple(b"".join(rdata.strings) for rdata in answer.rrset)


def dnsfunc_for(resolver: dns.resolver.Resolver, timeout: float = DEFAULT_TIMEOUT) -> TxtLookup:
    """TXT lookup callable for dkimpy/authheaders, bounded by `timeout` seconds."""
    return TxtLookup(resolver, timeout)
