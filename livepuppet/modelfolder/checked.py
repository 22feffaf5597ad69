"""Bounded, typed reading of untrusted JSON: every value checked by type and range before it is used.

A model folder's ``manifest.json`` may come from anywhere (a download, a copy,
an attacker), so nothing read from it is trusted: the text is size-capped,
its nesting depth is checked before the parser recurses, and each field is
taken through one of the small checkers here, which raise :class:`Invalid`
naming the field. Nothing is computed from a number before it is range-checked.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Mapping, Sequence, TypeVar

T = TypeVar("T")

MAX_DEPTH = 32  # a real manifest nests 6 deep
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


class Invalid(ValueError):
    """A field that is missing, of the wrong type, or out of range; ``str()`` names the field."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where} {why}" if where else why)


def parse(text: bytes, max_depth: int = MAX_DEPTH) -> Any:
    """JSON from bytes already size-capped by the caller; too deep a nesting is refused before parsing."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("", "is not UTF-8 text") from None
    depth = 0
    for char in _STRING.sub('""', decoded):  # brackets inside strings do not nest
        if char in "[{":
            depth += 1
            if depth > max_depth:
                raise Invalid("", f"nests deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(decoded, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise Invalid("", f"is not valid JSON ({str(exc)[:60]})") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def mapping(value: Any, where: str, max_items: int = 64) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(where, "is not an object")
    if len(value) > max_items:
        raise Invalid(where, f"has more than {max_items} entries")
    return value


def field(doc: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in doc:
        raise Invalid(f"{where}.{key}" if where else key, "is missing")
    return doc[key]


def integer(value: Any, where: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise Invalid(where, f"is not a whole number from {low} to {high}")
    return value


def number(value: Any, where: str, low: float, high: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise Invalid(where, f"is not a number from {low:g} to {high:g}")
    return float(value)


def boolean(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise Invalid(where, "is not true or false")
    return value


def text(value: Any, where: str, max_length: int = 255, choices: Sequence[str] | None = None) -> str:
    if not isinstance(value, str) or len(value) > max_length or "\0" in value:
        raise Invalid(where, f"is not a text of at most {max_length} characters")
    if choices is not None and value not in choices:
        raise Invalid(where, f"is {value[:40]!r}, not one of {', '.join(choices)}")
    return value


def items(value: Any, where: str, max_items: int, read: Callable[[Any, str], T]) -> tuple[T, ...]:
    """A list of at most ``max_items``, each taken through ``read(item, 'where[i]')``."""
    if not isinstance(value, list):
        raise Invalid(where, "is not a list")
    if len(value) > max_items:
        raise Invalid(where, f"has more than {max_items} items")
    return tuple(read(item, f"{where}[{i}]") for i, item in enumerate(value))


def optional(doc: Mapping[str, Any], key: str, where: str, read: Callable[[Any, str], T], default: T) -> T:
    return read(doc[key], f"{where}.{key}" if where else key) if key in doc and doc[key] is not None else default
