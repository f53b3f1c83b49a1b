"""A small JSON-schema checker for tool arguments (the subset tool schemas use).

Not a full JSON Schema implementation: type, properties, required, enum, const,
items, additionalProperties, anyOf/oneOf/allOf, minItems/maxItems. Unknown keywords
($schema, description, format, ...) are ignored, so a schema we do not understand
never rejects a call on its own.

`conform(value, schema)` returns the value (with unambiguous coercions: a string
"30" where an integer is wanted) or raises `Invalid`.
"""

from __future__ import annotations

import json
from typing import Any


class Invalid(ValueError):
    """The value does not match the schema."""


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    # bool is an int in Python; JSON keeps them apart.
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def conform(value: Any, schema: Any) -> Any:
    """value, possibly coerced, when it satisfies schema; raises Invalid otherwise."""
    if not isinstance(schema, dict) or not schema:
        return value  # true / {} / something odd: anything goes
    value = _check_type(value, schema)
    if "enum" in schema and isinstance(schema["enum"], list) and value not in schema["enum"]:
        raise Invalid(f"{value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        raise Invalid(f"{value!r} is not {schema['const']!r}")
    if isinstance(value, dict):
        value = _check_object(value, schema)
    elif isinstance(value, list):
        value = _check_array(value, schema)
    return _check_combinators(value, schema)


def _check_type(value: Any, schema: dict) -> Any:
    want = schema.get("type")
    if want is None:
        return value
    types = want if isinstance(want, list) else [want]
    known = [t for t in types if t in _TYPES]
    if not known or any(_TYPES[t](value) for t in known):
        return value
    for t in known:  # a model that quoted a number or a boolean: unambiguous to undo
        coerced = _coerce(value, t)
        if coerced is not _NO:
            return coerced
    raise Invalid(f"{value!r} is not of type {want!r}")


_NO = object()


def _coerce(value: Any, want: str) -> Any:
    if not isinstance(value, str):
        return _NO
    text = value.strip()
    if want == "boolean" and text in ("true", "false"):
        return text == "true"
    if want in ("integer", "number"):
        try:
            num = json.loads(text)
        except ValueError:
            return _NO
        if _TYPES[want](num):
            return num
    return _NO


def _check_object(value: dict, schema: dict) -> dict:
    props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    missing = [k for k in required if k not in value]
    if missing:
        raise Invalid(f"missing required properties {missing!r}")
    extra_schema = schema.get("additionalProperties", True)
    out = {}
    for key, item in value.items():
        if key in props:
            out[key] = conform(item, props[key])
        elif extra_schema is False:
            raise Invalid(f"unexpected property {key!r}")
        else:
            out[key] = conform(item, extra_schema) if isinstance(extra_schema, dict) else item
    return out


def _check_array(value: list, schema: dict) -> list:
    lo, hi = schema.get("minItems"), schema.get("maxItems")
    if isinstance(lo, int) and len(value) < lo:
        raise Invalid(f"fewer than {lo} items")
    if isinstance(hi, int) and len(value) > hi:
        raise Invalid(f"more than {hi} items")
    items = schema.get("items")
    return [conform(v, items) for v in value] if isinstance(items, dict) else value


def _check_combinators(value: Any, schema: dict) -> Any:
    for sub in schema.get("allOf") or []:
        value = conform(value, sub)
    for key in ("anyOf", "oneOf"):  # oneOf checked as anyOf: exclusivity is rarely meant
        options = schema.get(key)
        if isinstance(options, list) and options:
            value = _first_match(value, options)
    return value


def _first_match(value: Any, options: list) -> Any:
    for sub in options:
        try:
            return conform(value, sub)
        except Invalid:
            continue
    raise Invalid(f"{value!r} matches none of the alternatives")
