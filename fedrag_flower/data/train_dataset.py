"""Turning a trainer's ``train_dataset`` (rows, columns or a ``datasets.Dataset``) into rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fedrag_flower.data.fields import gold_ids


def as_rows(train_dataset: Any) -> list[dict]:
    """Normalise a trainer's ``train_dataset`` into a list of row dicts.

    Accepts a list of column dicts (``[{"query": [...], "response": [...]}]``, concatenated
    in order), one column dict, a list of row dicts, or a ``datasets.Dataset`` (anything with
    ``.to_dict()`` returning columns, or an iterable of row dicts). Returns rows
    ``{"query": str, "response": str}``, plus ``gold_ids`` (list of str), ``id`` and
    ``category`` where given. Raises ValueError naming the index and key of a bad entry.
    """
    if isinstance(train_dataset, str | bytes):
        raise ValueError(
            "train_dataset is a string; pass rows like [{'query': ..., 'response': ...}] or "
            "columns like {'query': [...], 'response': [...]}."
        )
    if isinstance(train_dataset, Mapping):
        parts: list[Any] = [train_dataset]
    elif hasattr(train_dataset, "to_dict") and not isinstance(train_dataset, Sequence):
        parts = [train_dataset.to_dict()]
    else:
        try:
            parts = list(train_dataset)
        except TypeError:
            raise ValueError(
                f"train_dataset of type {type(train_dataset).__name__} is not supported; pass "
                "a list of row dicts, a column dict, or a datasets.Dataset."
            ) from None
    rows: list[dict] = []
    for part_index, part in enumerate(parts):
        if not isinstance(part, Mapping):
            raise ValueError(
                f"train_dataset[{part_index}] is a {type(part).__name__}, expected a dict "
                "(a row {'query': str, 'response': str} or columns {'query': [...], ...})."
            )
        if _is_column_dict(part):
            for offset, row in enumerate(_column_rows(part, f"train_dataset[{part_index}]")):
                rows.append(
                    _as_row(
                        row, f"row {len(rows)} (train_dataset[{part_index}], position {offset})"
                    )
                )
        else:
            rows.append(_as_row(part, f"row {len(rows)} (train_dataset[{part_index}])"))
    if not rows:
        raise ValueError("train_dataset is empty: it needs at least one (query, response) row.")
    return rows


def _is_column_dict(part: Mapping) -> bool:
    value = part.get("query", part.get("response"))
    return isinstance(value, Sequence) and not isinstance(value, str)


def _column_rows(columns: Mapping, name: str) -> list[dict]:
    if columns and all(isinstance(value, Mapping) for value in columns.values()):
        # pandas' DataFrame.to_dict() gives {column: {index: value}}
        columns = {key: list(value.values()) for key, value in columns.items()}
    for key in ("query", "response"):
        if key not in columns:
            raise ValueError(
                f"{name} has no '{key}' column (keys: {', '.join(map(repr, columns))})."
            )
    keys = [key for key in ("query", "response", "gold_ids", "id", "category") if key in columns]
    lengths = {key: len(columns[key]) for key in keys}
    if len(set(lengths.values())) > 1:
        sizes = ", ".join(f"'{key}' has {n}" for key, n in lengths.items())
        raise ValueError(f"{name}: columns of unequal length ({sizes}).")
    return [{key: columns[key][i] for key in keys} for i in range(lengths["query"])]


def _as_row(row: Mapping, name: str) -> dict:
    out: dict[str, Any] = {}
    for key in ("query", "response"):
        value = row.get(key)
        if key not in row:
            raise ValueError(f"train_dataset {name}: missing key '{key}'.")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"train_dataset {name}: '{key}' must be a non-empty string, got {value!r}."
            )
        out[key] = value
    if row.get("gold_ids") is not None:
        try:
            out["gold_ids"] = gold_ids(row["gold_ids"])
        except TypeError as exc:
            raise ValueError(f"train_dataset {name}: 'gold_ids': {exc}.") from None
    for key in ("id", "category"):
        if row.get(key) is not None:
            out[key] = str(row[key])
    return out
