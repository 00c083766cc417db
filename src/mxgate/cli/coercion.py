"""Typer's parameter coercion without pydantic for the plain cases.

Typer (0.2x) turns each parameter's value into its annotated type with a pydantic TypeAdapter,
built on first use — so any command with a str option imports pydantic and builds adapters:
~0.1 s of a `mxgate connector set` (issue 19: a policy change starts in under 200 ms). For the
values a command line gives — a str for a str, a bool for a bool, a list of str, ASCII digits for
an int, an existing-or-not file for a Path that needs no normalising — the result is the value
itself (or int()/Path()), and Typer's own path checks still run. Everything else (a parser, an
enum, a bound, bytes, anything unusual) goes to Typer's adapter, so messages and results are
Typer's. tests/cli/test_startup.py compares both on the same values.

Installed by cli/__init__.py. With a Typer without this mechanism (older ones use click types,
no pydantic) nothing is changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

_DIGITS = re.compile(r"-?[0-9]+")
_UNHANDLED = object()


def plain_value(annotation: Any, parameter_info: Any, value: Any) -> Any:
    """`value` as `annotation` when no conversion is needed beyond int()/Path(), else _UNHANDLED.
    Path values are returned as Path objects that Typer's path checks still have to see."""
    if getattr(parameter_info, "parser", None) is not None:
        return _UNHANDLED
    if annotation is str and isinstance(value, str):
        return value
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is int and getattr(parameter_info, "min", None) is None and getattr(parameter_info, "max", None) is None:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _DIGITS.fullmatch(value):
            return int(value)
        return _UNHANDLED
    if get_origin(annotation) is list and get_args(annotation) == (str,) and isinstance(value, (list, tuple)) \
            and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(annotation, type) and issubclass(annotation, Path) and getattr(parameter_info, "path_type", None) is None \
            and isinstance(value, str) and value and str(annotation(value)) == value:
        return annotation(value)  # str() round-trips: Typer's messages name the same text
    return _UNHANDLED


def install() -> bool:
    """Give Typer's parameters the plain coercion first; False if this Typer has no such hook."""
    try:
        from typer import _coercion, core
        from typer._param_types import coerce_cli_path
    except ImportError:
        return False
    typer_build = getattr(core, "build_runtime_param", None)
    base = getattr(_coercion, "RuntimeParam", None)
    if typer_build is None or base is None or getattr(typer_build, "_mxgate_plain", False):
        return False

    @dataclass(frozen=True)
    class PlainRuntimeParam(base):
        descriptor: Any = None

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            plain = plain_value(self.annotation, self.parameter_info, value)
            if plain is _UNHANDLED:
                return typer_build(self.descriptor)._coerce_value(value, param=param, ctx=ctx)
            if isinstance(plain, Path):
                return coerce_cli_path(plain, self.parameter_info, path_type=self.annotation, param=param, ctx=ctx)
            return plain

    def build(descriptor: Any) -> Any:
        if descriptor.file_annotation is not None:
            return typer_build(descriptor)
        return PlainRuntimeParam(annotation=descriptor.annotation, parameter_info=descriptor.parameter_info,
                                 descriptor=descriptor)

    build._mxgate_plain = True  # type: ignore[attr-defined]
    core.build_runtime_param = build
    return True
