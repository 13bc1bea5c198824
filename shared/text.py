"""The character-class rules every string from outside meets: the person's fields, every command and
event field, every HTTP body (R12: what is stored, logged and shown is text, not terminal escapes).

One rule, `no_controls`: no character of Unicode category C (controls such as NUL, ESC, CR/LF, format
characters such as the U+202E bidi override, lone surrogates, private-use and unassigned code points)
and no line or paragraph separator (U+2028, U+2029).
Free text (a topic, a reason, a message) may also hold line feeds and tabs. Models that carry strings
inherit `CleanText`, which applies the rule to every string field (and every string in a list field),
both to what was sent and to what is kept after normalisation, so a field added later is covered too;
a model names its free-text fields in `PROSE`.
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata
from typing import Annotated, Any, ClassVar, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

#: what free text may hold beyond the rule
PROSE_ALLOWED = "\n\t"


def no_controls(text: str, allowed: str = "") -> str:
    """Control and format characters (NUL, ESC, BEL, bidi overrides, lone surrogates…) have no place in
    a field."""
    if text.isprintable():  # no character of category C or Z but the space: clean, without a scan here
        return text
    bad = next((c for c in text if _refused(c) and c not in allowed), None)
    if bad is not None:
        raise ValueError(f"control character U+{ord(bad):04X} is not allowed")
    return text


def _refused(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] == "C" or category in ("Zl", "Zp")  # U+2028/U+2029 break lines too


def is_clean(text: str, allowed: str = "") -> bool:
    try:
        no_controls(text, allowed)
    except ValueError:
        return False
    return True


def _escaped(char: str) -> str:
    return char.encode("unicode_escape").decode("ascii")


def shown(text: str, limit: int = 200, allowed: str = "") -> str:
    """Text from outside (a key, an error message) made safe to answer, log and publish: characters the
    rule refuses (beyond `allowed`) are written as escapes (U+202E as \\u202e), cut at `limit`."""
    if not is_clean(text, allowed):
        text = "".join(c if is_clean(c, allowed) else _escaped(c) for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _walk(value: Any, allowed: str, dicts: bool = True) -> None:
    if isinstance(value, str):
        no_controls(value, allowed)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _walk(item, allowed, dicts)
    elif isinstance(value, dict) and dicts:
        for key, item in value.items():
            _walk(key, "")
            _walk(item, allowed)
    # nested models check themselves (and name their own fields)


def _holds_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_holds_model(arg) for arg in get_args(annotation))


@functools.cache
def _model_fields_of(cls: type[BaseModel]) -> frozenset[str]:
    """The fields of `cls` that hold another model (worked out once per class, not per validation)."""
    return frozenset(name for name, f in cls.model_fields.items() if _holds_model(f.annotation))


class CleanText(BaseModel):
    """Base of models with strings from outside: every string field meets `no_controls`, and a key
    the model does not know is an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")

    #: free-text fields, which may hold line feeds and tabs
    PROSE: ClassVar[frozenset[str]] = frozenset()
    #: fields that carry another model's input, checked by that model (a command's form)
    CHECKED_LATER: ClassVar[frozenset[str]] = frozenset()

    # before: what was sent (a normaliser such as the phone parser may drop a trailing NUL);
    # after: what is kept (normalised values)
    @field_validator("*", mode="before", check_fields=False)
    @classmethod
    def _sent_without_controls(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name not in cls.CHECKED_LATER:
            models = info.field_name in _model_fields_of(cls)  # raw input of a nested model
            _walk(value, PROSE_ALLOWED if info.field_name in cls.PROSE else "", dicts=not models)
        return value

    @field_validator("*", mode="after", check_fields=False)
    @classmethod
    def _kept_without_controls(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name not in cls.CHECKED_LATER:
            _walk(value, PROSE_ALLOWED if info.field_name in cls.PROSE else "")
        return value


def normalize_ip(value: str) -> str:
    """An IPv4 or IPv6 address, in its canonical form (so one address has one pseudonym in audit)."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError as exc:
        raise ValueError("not an IP address") from exc
    return no_controls(str(address))  # an IPv6 scope id is free text


IpAddress = Annotated[str, AfterValidator(normalize_ip)]
