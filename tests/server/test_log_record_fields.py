"""setup_logging stops LogRecord looking up the pid, thread and process name (issue 19): safe
only while JsonFormatter writes none of them, which this checks."""

from __future__ import annotations

import logging

import pytest

from mxgate.logs import JsonFormatter, setup_logging

FLAGS = ("logProcesses", "logThreads", "logMultiprocessing")


@pytest.fixture
def saved_logging():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, {f: getattr(logging, f) for f in FLAGS})
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for flag, value in saved[2].items():
        setattr(logging, flag, value)


def _record(looked_up: bool) -> logging.LogRecord:
    for flag in FLAGS:
        setattr(logging, flag, looked_up)
    record = logging.LogRecord("mxgate.gateway", logging.INFO, __file__, 1, "message %s relayed", ("ID",), None)
    record.created, record.msecs, record.trace_id = 1764698400.25, 250.0, "ID"
    return record


def test_setup_logging_turns_the_lookups_off(saved_logging):
    setup_logging("info")
    assert not any(getattr(logging, flag) for flag in FLAGS)


def test_log_lines_do_not_depend_on_the_lookups(saved_logging):
    with_ids, without = _record(True), _record(False)
    assert with_ids.process is not None and without.process is None
    assert JsonFormatter().format(with_ids) == JsonFormatter().format(without)
