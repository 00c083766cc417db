"""Attachment policy: blocked file types by name and by content, including inside zip archives.

Owns: the rule over the files the MIME walk found (filters/mimewalk.py: names, first bytes,
archive members): a blocked extension or a blocked sniffed type fires. A walk that stopped at a
limit, broke or ran out of time is this check's error or timeout (never a pass): the pipeline
applies `on_error` / `on_timeout`. Must not know: MIME parsing, SMTP, or what the action does.
"""

from __future__ import annotations

from mxgate.filters.mimewalk import FoundFile
from mxgate.filters.result import CheckEnv, CheckResult, MessageFacts, fired, passed
from mxgate.policy.gateway_checks import CheckSettings

NAME = "attachments"


def on_loop(cfg: CheckSettings) -> bool:
    """Gather only reads what the walk found (bounded by the walk's limits): no worker needed."""
    return True


def gather(facts: MessageFacts, cfg: CheckSettings, env: CheckEnv) -> list[FoundFile]:
    if env.walk_error is not None:
        raise env.walk_error
    if env.walk is None:
        raise RuntimeError("the MIME walk did not run")
    return list(env.walk.files)


def blocked(files: list[FoundFile], extensions, types) -> list[str]:
    if not files:
        return []  # most mail: no file, and no set of the ~30 extensions built for it (issue 19)
    exts = {e.lower().lstrip(".") for e in extensions}
    bad = []
    for f in files:
        # Every name the part gives the file (readers differ in which one they save it under).
        names = _readings((f.name,) + f.also)
        ext = next((e for e in map(_extension, names) if e in exts), None)
        if ext is not None:
            bad.append(f"{f.name} (extension .{ext})" if ext == _extension(f.name) else
                       f"{f.name} (also read as {next(a for a in names if _extension(a) == ext)})")
        elif f.sniffed and f.sniffed in types:
            bad.append(f"{f.name} (content is {f.sniffed})")
    return bad


def _extension(name: str) -> str:
    base = name.rsplit("/", 1)[-1].lower().rstrip(". ")
    return base.rsplit(".", 1)[-1] if "." in base else ""


def _readings(names: tuple[str, ...]) -> tuple[str, ...]:
    """Each name, and where it holds a NUL also what comes before it: the name of whatever saves
    the file through a C string (the Win32 file API does)."""
    return names + tuple(n.split("\x00", 1)[0] for n in names if "\x00" in n)


def decide(raw: list[FoundFile], cfg: CheckSettings) -> CheckResult:
    bad = blocked(raw, cfg["blocked_extensions"], cfg["blocked_types"])
    if bad:
        return fired(NAME, cfg.action, "blocked-attachment", "blocked: " + "; ".join(bad[:10]), blocked=bad[:10])
    return passed(NAME, f"{len(raw)} file(s) allowed", blocked=[])
