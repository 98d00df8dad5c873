"""Metadata filters compiled to SQL over the `metadata_index` table.

A filter is compiled to one `SELECT label ...` that yields the labels of the
matching documents, so the vector search only ever ranks rows that match.
Values are always bound parameters, never spliced into the SQL text.

Shape (as other LangChain stores take it)::

    {"user_id": "u7"}                              # equality
    {"year": {"$gte": 2020, "$lt": 2024}}          # several operators: all hold
    {"kind": {"$in": ["fact", "preference"]}}
    {"$or": [{"user_id": "u7"}, {"shared": True}]}

Only top-level keys whose values are `str`, `int`, `float` or `bool` can be
compared; `$exists` works for any value. Comparisons are type-strict: `1`
matches `1` and `1.0`, never `True` or `"1"`. `$ne`, `$nin` and
`{"$exists": False}` also match documents that lack the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_INT64_MAX = 2**63 - 1
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS)
_ALL = "SELECT label FROM documents"
_KEY = "SELECT label FROM metadata_index WHERE key = ?"


def typed_value(value: Any) -> tuple[str, Any]:
    """Return the `(type, value)` pair a metadata value is indexed under."""
    if isinstance(value, bool):
        return "bool", int(value)
    if isinstance(value, int):
        return "num", value if abs(value) <= _INT64_MAX else float(value)
    if isinstance(value, float):
        return "num", value
    if isinstance(value, str):
        return "str", value
    return "other", None


def index_rows(label: int, metadata: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of `metadata_index` for one document."""
    return [(key, *typed_value(value), label) for key, value in metadata.items()]


def compile_filter(flt: Any) -> tuple[str, list[Any]]:
    """Compile a filter dict to `(sql, params)` selecting matching labels.

    Raises:
        TypeError: If the filter is not a dict or holds a value of the wrong type.
        ValueError: If it names an unknown operator or has an empty `$and`/`$or`.
    """
    if not isinstance(flt, Mapping):
        msg = (
            f"filter must be a dict such as {{'user_id': 'u7'}}, "
            f"got {type(flt).__name__}."
        )
        raise TypeError(msg)
    params: list[Any] = []
    return _compile(flt, params), params


def _compile(flt: Mapping[str, Any], params: list[Any]) -> str:
    parts: list[str] = []
    for key, condition in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, (list, tuple)) or not condition:
                msg = f"{key} takes a non-empty list of filters, got {condition!r}."
                raise ValueError(msg)
            subs = [_compile(_as_mapping(sub, key), params) for sub in condition]
            parts.append(_join(subs, "INTERSECT" if key == "$and" else "UNION"))
        elif not isinstance(key, str) or not key:
            msg = f"filter keys must be non-empty strings, got {key!r}."
            raise TypeError(msg)
        elif key.startswith("$"):
            msg = f"Unknown filter operator {key!r}; use $and or $or at the top level."
            raise ValueError(msg)
        elif isinstance(condition, Mapping):
            if not condition:
                msg = f"filter on {key!r} has no operator; use one of {_OPERATORS}."
                raise ValueError(msg)
            parts.extend(
                _operator(key, op, value, params) for op, value in condition.items()
            )
        else:
            parts.append(_operator(key, "$eq", condition, params))
    if not parts:
        return _ALL
    return _join(parts, "INTERSECT")


def _as_mapping(sub: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(sub, Mapping):
        msg = f"Each item of {where} must be a filter dict, got {sub!r}."
        raise TypeError(msg)
    return sub


def _join(parts: list[str], how: str) -> str:
    if len(parts) == 1:
        return parts[0]
    return f" {how} ".join(f"SELECT label FROM ({part})" for part in parts)  # noqa: S608


def _operator(key: str, op: str, value: Any, params: list[Any]) -> str:
    if op == "$eq":
        kind, comparable = _comparable(key, op, value)
        params.extend((key, kind, comparable))
        return f"{_KEY} AND type = ? AND value = ?"
    if op in ("$ne", "$nin"):
        positive = _operator(key, "$eq" if op == "$ne" else "$in", value, params)
        return f"{_ALL} EXCEPT {positive}"
    if op == "$in":
        return _in_list(key, value, params)
    if op == "$exists":
        if not isinstance(value, bool):
            msg = f"filter on {key!r}: $exists takes True or False, got {value!r}."
            raise TypeError(msg)
        params.append(key)
        return _KEY if value else f"{_ALL} EXCEPT {_KEY}"
    if op in _COMPARISONS:
        kind, comparable = _comparable(key, op, value)
        if kind == "bool":
            msg = f"filter on {key!r}: {op} compares numbers or strings, not booleans."
            raise TypeError(msg)
        params.extend((key, kind, comparable))
        return f"{_KEY} AND type = ? AND value {_COMPARISONS[op]} ?"
    msg = f"Unknown filter operator {op!r} on {key!r}; use one of {_OPERATORS}."
    raise ValueError(msg)


def _in_list(key: str, value: Any, params: list[Any]) -> str:
    if not isinstance(value, (list, tuple, set, frozenset)):
        msg = f"filter on {key!r}: $in and $nin take a list, got {value!r}."
        raise TypeError(msg)
    pairs = [_comparable(key, "$in", item) for item in value]
    params.append(key)
    if not pairs:
        return f"{_KEY} AND 0"
    for pair in pairs:
        params.extend(pair)
    rows = ", ".join(["(?, ?)"] * len(pairs))
    return f"{_KEY} AND (type, value) IN (VALUES {rows})"


def _comparable(key: str, op: str, value: Any) -> tuple[str, Any]:
    kind, comparable = typed_value(value)
    if kind == "other" or (isinstance(value, float) and not math.isfinite(value)):
        msg = (
            f"filter on {key!r}: {op} compares str, int, float or bool values, "
            f"got {value!r}."
        )
        raise TypeError(msg)
    return kind, comparable
