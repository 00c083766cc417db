"""Issue 19: the one MIME walk of a short message held in memory runs on the event loop; past
LOOP_WALK_SECONDS (archives to inflate, a sender's many parts) the loop's try stops at its next
look at the budget and the walk starts again in a worker within the message's own budget. The
same Walk either way; a large or spooled message goes to a worker at once."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import tempfile
import zipfile

import pytest

from mxgate.filters import pipeline as pl
from mxgate.filters.pipeline import Pipeline
from mxgate.filters.result import CheckEnv, MessageFacts
from mxgate.policy.gateway_checks import DEFAULTS, CheckSettings
from mxgate.smtp.source import MessageSource

HEAD = b"From: a@fabrikam.test\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def _multipart(*parts: bytes) -> bytes:
    out = b"Content-Type: multipart/mixed; boundary=B\r\n\r\npreamble\r\n"
    for p in parts:
        out += b"--B\r\n" + p + b"\r\n"
    return out + b"--B--\r\n"


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _attachment(name: str, data: bytes) -> bytes:
    return (f"Content-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(data).replace(b"\n", b"\r\n")


MESSAGE = HEAD + _multipart(b"Content-Type: text/plain\r\n\r\nHello, see the report.",
                            _attachment("report.zip", _zip({"report.pdf": b"%PDF-1.4 ...", "run.exe": b"MZ\x90\x00"})))


def _facts(message: bytes, spooled: bool = False) -> MessageFacts:
    if spooled:
        fh = tempfile.TemporaryFile()
        fh.write(message)
        fh.flush()
        source = MessageSource(b"", fd=os.dup(fh.fileno()), size=len(message))
        fh.close()
    else:
        source = MessageSource.from_bytes(message)
    return MessageFacts("192.0.2.9", "mail.fabrikam.test", "a@fabrikam.test", ("b@contoso.test",),
                        source.split_head(65536))


def _checks() -> dict[str, CheckSettings]:
    return {"attachments": CheckSettings("attachments", dict(DEFAULTS["attachments"])),
            "score": CheckSettings("score", dict(DEFAULTS["score"]))}


def _walked(facts: MessageFacts) -> tuple:
    """(the walk or its error, hand-offs to a worker)."""
    async def main():
        p = Pipeline(workers=2)
        try:
            env = CheckEnv(None, None)
            await p._walk(facts, _checks(), env)
            return env.walk, env.walk_error, p.threads.jobs
        finally:
            p.close()

    walk, error, jobs = asyncio.run(main())
    return (walk if error is None else repr(error)), jobs


def _view(walk) -> tuple:
    if isinstance(walk, str):
        return (walk,)
    return (walk.header_block, walk.files, walk.text, walk.parts, walk.decoded, walk.max_depth)


@pytest.fixture(autouse=True)
def _unhurried(monkeypatch):
    """The loop's try gets all the time it needs unless a test says otherwise: which way a walk
    goes must not depend on how loaded the test machine is."""
    monkeypatch.setattr(pl, "LOOP_WALK_SECONDS", 60.0)


def test_a_short_message_is_walked_on_the_loop_with_the_workers_walk(monkeypatch):
    on_loop, hops = _walked(_facts(MESSAGE))
    assert hops == 0
    assert {f.name for f in on_loop.files} >= {"report.zip", "report.zip/report.pdf", "report.zip/run.exe"}  # inflated
    monkeypatch.setattr(pl, "LOOP_WALK_MAX", -1)  # never on the loop: the worker's walk
    in_worker, hops = _walked(_facts(MESSAGE))
    assert hops == 1 and _view(in_worker) == _view(on_loop)


def test_a_walk_past_its_loop_time_starts_again_in_a_worker(monkeypatch):
    """As when a sender's archive takes long to inflate: the loop's try ends at its budget and the
    worker's walk is the answer, the same walk."""
    reference, _ = _walked(_facts(MESSAGE))
    monkeypatch.setattr(pl, "LOOP_WALK_SECONDS", 0.0)  # the first look at the budget ends the try
    walked, hops = _walked(_facts(MESSAGE))
    assert hops == 1 and _view(walked) == _view(reference)


def test_a_loop_try_stops_at_its_budget_and_a_worker_walks(monkeypatch):
    """Many parts and a nested archive: the try on the loop looks at its budget as it goes and
    stops once LOOP_WALK_SECONDS have passed (a stepped clock: 1 ms a look); the worker then walks
    the whole message within the message's budget."""
    members = {f"f{i}.txt": os.urandom(32) for i in range(200)}
    nested = _zip({"inner.zip": _zip(members)})
    parts = [b"Content-Type: text/plain\r\n\r\n" + b"line\r\n" * 20 for _ in range(150)]
    message = HEAD + _multipart(*parts, _attachment("a.zip", nested))
    assert len(message) < pl.LOOP_WALK_MAX
    reference, hops = _walked(_facts(message))
    assert hops == 0 and reference.parts > 150
    looks = []

    def stepped() -> float:
        looks.append(1)
        return len(looks) * 0.001

    monkeypatch.setattr(pl, "LOOP_WALK_SECONDS", 0.003)
    monkeypatch.setattr(pl, "_loop_clock", stepped)
    walked, hops = _walked(_facts(message))
    assert hops == 1 and 3 <= len(looks) <= 6  # stopped at the budget's first look past it
    assert _view(walked) == _view(reference)


def test_a_limit_found_on_the_loop_is_the_walks_answer(monkeypatch):
    """A sender's message past a walk limit: refused from the loop's walk, no second walk."""
    message = HEAD + _multipart(*[b"Content-Type: text/plain\r\n\r\nx"] * (pl.mimewalk.LIMITS.parts + 1))
    assert len(message) < pl.LOOP_WALK_MAX
    walked, hops = _walked(_facts(message))
    assert hops == 0 and "InspectionLimit" in walked


@pytest.mark.parametrize("spooled", [True, False])
def test_large_or_spooled_messages_are_walked_in_a_worker(spooled):
    message = MESSAGE if spooled else HEAD + _multipart(b"Content-Type: text/plain\r\n\r\n" + b"y" * 76 * 1000)
    assert spooled or len(message) > pl.LOOP_WALK_MAX
    walked, hops = _walked(_facts(message, spooled=spooled))
    assert hops == 1 and not isinstance(walked, str)
