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
from collections.abc import Callable, Mapping
from typing import Any

from langchain_persistent_memory._db import storable

_INT64_MAX = 2**63 - 1
_COMPARISONS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_OPERATORS = ("$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS)


def typed_value(value: Any, where: str = "a metadata value") -> tuple[str, Any]:
    """Return the `(type, value)` pair a metadata value is indexed under.

    Raises:
        ValueError: For an int beyond the 64-bit range, which SQLite could
            only compare as a float, that is, inexactly.
    """
    if isinstance(value, bool):
        return "bool", int(value)
    if isinstance(value, int):
        if abs(value) > _INT64_MAX:
            msg = (
                f"{where} is an integer beyond the 64-bit range, which cannot be "
                "indexed and compared exactly. Store it as a string."
            )
            raise ValueError(msg)
        return "num", value
    if isinstance(value, float):
        return "num", value
    if isinstance(value, str):
        return "str", storable(value, where)
    return "other", None


def index_rows(label: int, metadata: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Rows of `metadata_index` for one document."""
    return [(key, *typed_value(value), label) for key, value in metadata.items()]


def compile_filter(
    flt: Any, bind: Callable[[Any], Any] | None = None
) -> tuple[str, list[Any]]:
    """Compile a filter dict to `(sql, params)` selecting matching labels.

    `bind` wraps each compared value as the database binds the `value`
    column (PostgreSQL: JSONB); by default values are bound as they are.

    The query is driven by one indexable condition of the filter's top-level
    conjunction (an equality, `$in`, a range or `{"$exists": True}`, the
    first one given), read from the metadata index; every other condition is
    checked per candidate with an indexed `EXISTS` probe. So a filter that
    names a rare user costs about as much as that user's rows, whatever else
    it says.

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
    conjuncts = _conjuncts(_parse(flt, bind or _same))
    driver = next((c for c in conjuncts if _drives(c)), None)
    params: list[Any] = []
    if driver is None:
        source = "documents"
    else:
        source = f"({_driver_sql(driver, params)})"
        conjuncts = [c for c in conjuncts if c is not driver]
    sql = f"SELECT t.label AS label FROM {source} AS t"  # noqa: S608
    if conjuncts:
        sql += " WHERE " + " AND ".join(_condition(c, params) for c in conjuncts)
    return sql, params


# A parsed filter: ("and" | "or", [nodes]) or ("leaf", key, op, value).
_Node = tuple[Any, ...]


def _same(value: Any) -> Any:
    return value


def _parse(flt: Mapping[str, Any], bind: Callable[[Any], Any]) -> _Node:
    nodes: list[_Node] = []
    for key, condition in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(condition, (list, tuple)) or not condition:
                msg = f"{key} takes a non-empty list of filters, got {condition!r}."
                raise ValueError(msg)
            children = [_parse(_as_mapping(sub, key), bind) for sub in condition]
            nodes.append(("and" if key == "$and" else "or", children))
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
            nodes.extend(_leaf(key, op, value, bind) for op, value in condition.items())
        else:
            nodes.append(_leaf(key, "$eq", condition, bind))
    return ("and", nodes)


def _leaf(key: str, op: str, value: Any, bind: Callable[[Any], Any]) -> _Node:
    """Validate one condition; values become `(type, bound value)` pairs."""
    storable(key, "a filter key")
    if op in ("$eq", "$ne"):
        return ("leaf", key, op, _comparable(key, op, value, bind))
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple, set, frozenset)):
            msg = f"filter on {key!r}: $in and $nin take a list, got {value!r}."
            raise TypeError(msg)
        pairs = [_comparable(key, op, item, bind) for item in value]
        return ("leaf", key, op, pairs)
    if op == "$exists":
        if not isinstance(value, bool):
            msg = f"filter on {key!r}: $exists takes True or False, got {value!r}."
            raise TypeError(msg)
        return ("leaf", key, op, value)
    if op in _COMPARISONS:
        pair = _comparable(key, op, value, bind)
        if pair[0] == "bool":
            msg = f"filter on {key!r}: {op} compares numbers or strings, not booleans."
            raise TypeError(msg)
        return ("leaf", key, op, pair)
    msg = f"Unknown filter operator {op!r} on {key!r}; use one of {_OPERATORS}."
    raise ValueError(msg)


def _as_mapping(sub: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(sub, Mapping):
        msg = f"Each item of {where} must be a filter dict, got {sub!r}."
        raise TypeError(msg)
    return sub


def _conjuncts(node: _Node) -> list[_Node]:
    """The conditions that must all hold, with nested `$and`s flattened."""
    if node[0] != "and":
        return [node]
    return [part for child in node[1] for part in _conjuncts(child)]


def _drives(node: _Node) -> bool:
    if node[0] != "leaf":
        return False
    op = node[2]
    return op in ("$eq", "$in", *_COMPARISONS) or (op == "$exists" and node[3])


def _match(key: str, op: str, value: Any, params: list[Any]) -> str:
    """Conditions on a `metadata_index` row for a positive leaf."""
    params.append(key)
    if op == "$exists":
        return "key = ?"
    if op in ("$in", "$nin"):
        if not value:
            return "key = ? AND 1 = 0"
        for pair in value:
            params.extend(pair)
        rows = ", ".join(["(?, ?)"] * len(value))
        return f"key = ? AND (type, value) IN (VALUES {rows})"
    params.extend(value)
    comparison = "=" if op in ("$eq", "$ne") else _COMPARISONS[op]
    return f"key = ? AND type = ? AND value {comparison} ?"


def _driver_sql(node: _Node, params: list[Any]) -> str:
    _, key, op, value = node
    return f"SELECT label FROM metadata_index WHERE {_match(key, op, value, params)}"  # noqa: S608


def _condition(node: _Node, params: list[Any]) -> str:
    """A SQL condition on the candidate `t.label` for one node."""
    if node[0] in ("and", "or"):
        if not node[1]:
            return "1 = 1"
        joiner = " AND " if node[0] == "and" else " OR "
        return "(" + joiner.join(_condition(child, params) for child in node[1]) + ")"
    _, key, op, value = node
    negated = op in ("$ne", "$nin") or (op == "$exists" and not value)
    probe = (
        "EXISTS (SELECT 1 FROM metadata_index AS m"  # noqa: S608
        f" WHERE m.label = t.label AND {_match(key, op, value, params)})"
    )
    return f"NOT {probe}" if negated else probe


def _comparable(
    key: str, op: str, value: Any, bind: Callable[[Any], Any]
) -> tuple[str, Any]:
    kind, comparable = typed_value(value, f"the filter value for {key!r}")
    if kind == "other" or (isinstance(value, float) and not math.isfinite(value)):
        msg = (
            f"filter on {key!r}: {op} compares str, int, float or bool values, "
            f"got {value!r}."
        )
        raise TypeError(msg)
    return kind, bind(comparable)
