"""Checking one field of a raw row: ids, texts, optional strings and gold-id lists.

Each check returns the field's clean value or raises a :class:`DataError` that names the
file, the line and the field, and says what the row has instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from fedrag_flower.data.records import Record, located_error

GOLD_ID_SEPARATOR = "|"


def present(values: Mapping, name: str) -> bool:
    """Whether ``values`` has ``name`` with a value that is not None or blank."""
    value = values.get(name)
    return value is not None and not (isinstance(value, str) and not value.strip())


def id_value(path: Path, record: Record, name: str, what: str) -> str:
    """A required id (string or integer), as a stripped string."""
    value = record.values.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        missing = "missing" if name not in record.values else "empty"
        raise located_error(
            path,
            f"{missing} {what}. Every row needs one; the row has {_fields(record.values)}.",
            row=record.row,
            field=name,
        )
    return _str_or_int(path, record, name, what).strip()


def text_value(path: Path, record: Record, name: str, what: str) -> str:
    """A required, non-blank string, unchanged."""
    value = record.values.get(name)
    if name not in record.values or value is None:
        raise located_error(
            path,
            f"missing {what}. Every row needs a non-empty '{name}'; the row has "
            f"{_fields(record.values)}.",
            row=record.row,
            field=name,
        )
    if not isinstance(value, str):
        raise located_error(
            path,
            f"{what} must be a string, got {type(value).__name__}.",
            row=record.row,
            field=name,
        )
    if not value.strip():
        raise located_error(
            path,
            f"empty {what}. Fill it in or remove the row.",
            row=record.row,
            field=name,
        )
    return value


def optional_str(path: Path, record: Record, name: str) -> str | None:
    """An optional string (an integer is accepted and converted); None when absent or blank."""
    if not present(record.values, name):
        return None
    return _str_or_int(path, record, name, name)


def _str_or_int(path: Path, record: Record, name: str, what: str) -> str:
    value = record.values[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise located_error(
            path,
            f"{what} must be a string or an integer, got {type(value).__name__} {value!r}.",
            row=record.row,
            field=name,
        )
    return str(value)


def _fields(values: Mapping) -> str:
    names = [str(name) for name in values if name is not None]
    return "fields " + ", ".join(f"'{name}'" for name in names) if names else "no fields"


def gold_ids(value: Any) -> list[str]:
    """Gold ids as a list of strings; raises TypeError for a value of the wrong type."""
    if value is None:
        return []
    if isinstance(value, str):
        items: Iterable[Any] = value.split(GOLD_ID_SEPARATOR)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise TypeError(
            f"gold ids must be a list of ids or a '{GOLD_ID_SEPARATOR}'-separated string, "
            f"got {type(value).__name__}"
        )
    ids = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise TypeError(f"each gold id must be a string or integer, got {item!r}")
        item = str(item).strip()
        if item:
            ids.append(item)
    return ids
