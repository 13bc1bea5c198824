"""JSON from outside (HTTP bodies, AMQP messages), read so that a hostile shape is refused with a
reason instead of failing somewhere deeper.

`json.loads` alone accepts what later breaks: nesting thousands deep (RecursionError in the decoder,
or later in any code that walks the value), lone surrogates such as "\\ud800" (valid JSON escapes,
but no character: hashing, BSON and JSON answers all fail to encode them), duplicate keys (two
readers may see two different values), NaN/Infinity (not JSON), and integers no database field can
hold. `loads` refuses each with an `UnsafeJson` naming the field where it can, before anything else
sees the value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from shared.text import shown

MAX_DEPTH = 32  # the deepest message here (an event's alternatives) is 5 levels
INT64 = 2**63
_TOKENS = re.compile(r'"(?:[^"\\]++|\\.)*+"|[\[\]{}]')


class UnsafeJson(ValueError):
    """Not JSON, or JSON of a shape refused here; `path` locates the field when known."""

    def __init__(self, message: str, path: tuple[str | int, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    @property
    def field(self) -> str:
        """The dotted path, with characters outside the text rules escaped (it is answered back)."""
        return ".".join(shown(str(p), 100) for p in self.path) or "body"


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        if token in "[{":
            depth += 1
            if depth > max_depth:
                raise UnsafeJson(f"nested deeper than {max_depth} levels")
        elif token in "]}":
            depth -= 1


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise UnsafeJson("the same key appears twice in one object", (key,))
        out[key] = value
    return out


def _int(literal: str) -> int:
    if len(literal) > 20 or not -INT64 <= (value := int(literal)) < INT64:
        raise UnsafeJson(f"the number {literal[:30]} is out of range (64-bit integers only)")
    return value


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise UnsafeJson(f"the number {literal[:30]} is out of range")
    return value


def _constant(name: str) -> float:
    raise UnsafeJson(f"{name} is not JSON")


def _check_strings(data: Any) -> None:
    """Every key and string value is encodable as UTF-8 (no lone surrogates)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                _encodable(key, (*path, key))
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, str):
            _encodable(value, path)


def _encodable(text: str, path: tuple[str | int, ...]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        point = ord(text[exc.start])
        raise UnsafeJson(f"a lone surrogate U+{point:04X} is not a character", path) from None


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text (UTF-8 if bytes), refusing the shapes above with an `UnsafeJson`."""
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnsafeJson(f"not UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    _check_depth(text, max_depth)
    try:
        data = json.loads(
            text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float, parse_constant=_constant
        )
    except json.JSONDecodeError as exc:
        raise UnsafeJson(f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:  # not reached after the depth check; never a 500 all the same
        raise UnsafeJson(f"nested deeper than {max_depth} levels") from None
    _check_strings(data)
    return data
