"""msgspec's validation messages as plain sentences a client can show or log.

msgspec says "Expected `int | null`, got `str`" or quotes a whole regex; a 422's `errors` say
"must be an integer" or "must be a valid email address" instead (the field path stays beside
them). Messages this module does not know pass through unchanged.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import msgspec

from shopapi.schemas.patterns import SENTENCES

# what a value of a msgspec type name is, in words
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
    "bytes": "a base64 string",
    "datetime": "an RFC 3339 date-time",
    "date": "a date (YYYY-MM-DD)",
    "uuid": "a UUID",
}
_TYPE = re.compile(r"^Expected `([^`]+)`, got `[^`]+`$")
_BOUND = re.compile(r"^Expected `(int|float)` (>=|>|<=|<) (\S+)$")
_MULTIPLE = re.compile(r"^Expected `(?:int|float)` that's a multiple of (\S+)$")
_LENGTH = re.compile(r"^Expected `(str|array|object)` of length (>=|<=) (\d+)$")
_PATTERN = re.compile(r"^Expected `str` matching regex (.+)$")
_MISSING = re.compile(r"^Object missing required field `.*`$")
_ENUM = re.compile(r"^Invalid enum value ")
_BOUND_WORDS = {">=": "at least", ">": "greater than", "<=": "at most", "<": "less than"}
_UNITS = {
    "str": ("character", "characters"),
    "array": ("item", "items"),
    "object": ("entry", "entries"),
}
ENUM_LISTED_UP_TO = 12  # longer lists (249 countries) are in the OpenAPI schema, not the message


def _kind(union: str) -> str:
    # "int | null" is "an integer": a client that sent a wrong type needs the useful one
    names = [name for name in union.split(" | ") if name != "null"] or ["null"]
    return " or ".join(_KINDS.get(name, f"of type {name}") for name in names)


def _number(text: str) -> str:
    return text.removesuffix(".0")  # msgspec writes float bounds as 0.0


def _counted(count: str, kind: str) -> str:
    one, many = _UNITS[kind]
    return f"{count} {one if count == '1' else many}"


def plain(message: str, allowed: tuple[Any, ...] | None = None) -> str:
    """The sentence for msgspec's `message` (its " - at `$...`" path already cut off);
    `allowed`: the values of the enum at that path, if known."""
    if match := _TYPE.match(message):
        return f"must be {_kind(match.group(1))}"
    if match := _BOUND.match(message):
        return f"must be {_BOUND_WORDS[match.group(2)]} {_number(match.group(3))}"
    if match := _LENGTH.match(message):
        kind, op, count = match.groups()
        if kind == "str":
            if op == ">=" and count == "1":
                return "must not be empty"
            return f"must be {_BOUND_WORDS[op]} {_counted(count, kind)} long"
        return f"must have {_BOUND_WORDS[op]} {_counted(count, kind)}"
    if match := _PATTERN.match(message):
        try:
            regex = ast.literal_eval(match.group(1))
        except (ValueError, SyntaxError):
            regex = None
        return SENTENCES.get(regex, "has an invalid format")
    if _MISSING.match(message):
        return "is required"
    if _ENUM.match(message):
        return one_of(allowed)
    if match := _MULTIPLE.match(message):
        return f"must be a multiple of {_number(match.group(1))}"
    return message


def one_of(allowed: tuple[Any, ...] | None) -> str:
    """The sentence for a value outside an enum of `allowed` values."""
    if allowed and len(allowed) <= ENUM_LISTED_UP_TO:
        return "must be one of " + ", ".join(str(value) for value in allowed)
    return "is not one of the allowed values"


_SEGMENT = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def enum_values(root: type, path: str) -> tuple[Any, ...] | None:
    """The values of the Literal or Enum at `path` ("items[0].status") of `root`, else None."""
    info: Any = msgspec.inspect.type_info(root)
    for name, index in _SEGMENT.findall(path):
        info = _step(info, name, index)
        if info is None:
            return None
    info = _unwrap(info, (msgspec.inspect.LiteralType, msgspec.inspect.EnumType))
    if isinstance(info, msgspec.inspect.LiteralType):
        return tuple(info.values)
    if isinstance(info, msgspec.inspect.EnumType):
        return tuple(member.value for member in info.cls)
    return None


def _unwrap(info: Any, wanted: tuple[type, ...]) -> Any:
    """`info` without its Metadata wrapper, and the member of a union that is of `wanted`."""
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            member = _unwrap(member, wanted)
            if isinstance(member, wanted):
                return member
    return info


def _step(info: Any, name: str, index: str) -> Any:
    if index:
        info = _unwrap(info, (msgspec.inspect.ListType,))
        return info.item_type if isinstance(info, msgspec.inspect.ListType) else None
    info = _unwrap(info, (msgspec.inspect.StructType,))
    if isinstance(info, msgspec.inspect.StructType):
        for struct_field in info.fields:
            if struct_field.encode_name == name:
                return struct_field.type
    return None
