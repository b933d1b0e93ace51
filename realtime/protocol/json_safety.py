"""What every door checks so that anything accepted can be stored, rendered and replayed (section 11).

One walk over a decoded JSON value finds the first thing that some part of the pipeline
refuses, long after the request was accepted:

- nesting deeper than :data:`MAX_JSON_DEPTH` containers (orjson writes at most 255 levels, and
  frames wrap the data in several more: the stored event could never be sent);
- a lone surrogate (U+D800..U+DFFF) in a string or a key: Python's json reads ``"\\ud800"``,
  but no UTF-8 encoder writes it, and PostgreSQL's jsonb refuses it;
- U+0000 in a string or a key: PostgreSQL refuses it in jsonb and in text columns;
- an integer outside [-2^63, 2^64 - 1] (what orjson writes) or a float that is not finite
  (JSON has no NaN or Infinity);
- anything that is not a JSON value at all (only Python callers can build one).

Pure and synchronous: no Django, no I/O. The walk is iterative and stops at the depth
limit, so hostile input costs at most one pass over what was already decoded.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_JSON_DEPTH = 64
MIN_JSON_INT = -(2**63)
MAX_JSON_INT = 2**64 - 1
_MAX_PATH_CHARS = 200

TOO_DEEP = "nested too deep"
LONE_SURROGATE = "lone surrogate"
LONE_SURROGATE_KEY = "lone surrogate in a key"
NUL = "contains U+0000"
NUL_KEY = "U+0000 in a key"
OUT_OF_RANGE = "number out of range"
NOT_FINITE = "number not finite"
NOT_JSON = "not a JSON value"
KEY_NOT_STRING = "key is not a string"

_SURROGATE = re.compile("[\ud800-\udfff]")


def string_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored and sent everywhere (``None``: it can)."""
    if "\x00" in text:
        return NUL
    # Decoded JSON text is mostly ASCII, which holds neither; the regex runs for the rest.
    if not text.isascii() and _SURROGATE.search(text) is not None:
        return LONE_SURROGATE
    return None


def _key_problem(key: object) -> str | None:
    if type(key) is not str:
        return KEY_NOT_STRING
    problem = string_problem(key)
    if problem is None:
        return None
    return NUL_KEY if problem == NUL else LONE_SURROGATE_KEY


def _scalar_problem(value: object) -> str | None:
    kind = type(value)
    if kind is str:
        return string_problem(value)  # type: ignore[arg-type]
    if kind is int:
        return None if MIN_JSON_INT <= value <= MAX_JSON_INT else OUT_OF_RANGE  # type: ignore[operator]
    if kind is float:
        return None if math.isfinite(value) else NOT_FINITE  # type: ignore[arg-type]
    if value is None or kind is bool:
        return None
    return NOT_JSON


# One entry per container met: (container, depth, index of the parent's entry, key in the parent).
_Entry = tuple[Any, int, int, str]


def _path(entries: list[_Entry], index: int) -> tuple[str, ...]:
    parts: list[str] = []
    while index > 0:
        _, _, index, key = entries[index]
        parts.append(key)
    return tuple(reversed(parts))


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH) -> tuple[tuple[str, ...], str] | None:
    """The first problem in ``value`` as ``(path, reason)``, or ``None`` when it is safe.

    ``path`` holds the keys and list indexes from ``value`` down to the offending value (a key
    problem names the object holding the key; a depth problem names the first container
    past the limit). ``value`` itself is at depth 1 when it is an object or an array.
    """
    if type(value) is not dict and type(value) is not list:
        problem = _scalar_problem(value)
        return None if problem is None else ((), problem)
    # Breadth first, keeping every container's entry so a path is only built on failure:
    # this is on every message's path, and building paths as we go doubled the cost.
    entries: list[_Entry] = [(value, 1, -1, "")]
    index = 0
    while index < len(entries):
        container, depth, _, _ = entries[index]
        if depth > max_depth:
            return _path(entries, index), TOO_DEEP
        pairs = container.items() if type(container) is dict else enumerate(container)
        keyed = type(container) is dict
        for key, item in pairs:
            if keyed and (type(key) is not str or "\x00" in key or not key.isascii()):
                problem = _key_problem(key)
                if problem is not None:
                    return _path(entries, index), problem
            kind = type(item)
            if kind is dict or kind is list:
                entries.append((item, depth + 1, index, str(key)))
            elif kind is str:
                if "\x00" in item or not item.isascii():
                    problem = string_problem(item)
                    if problem is not None:
                        return (*_path(entries, index), str(key)), problem
            elif kind is not bool and item is not None:
                problem = _scalar_problem(item)
                if problem is not None:
                    return (*_path(entries, index), str(key)), problem
        index += 1
    return None


def dotted(path: tuple[str, ...], root: str = "") -> str:
    """``path`` as ``root.a.b.0`` (``root`` alone for the value itself), at most 200 characters."""
    text = ".".join(part for part in (root, *path) if part) or root or "data"
    return text if len(text) <= _MAX_PATH_CHARS else text[: _MAX_PATH_CHARS - 1] + "…"
