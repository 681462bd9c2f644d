"""What a corpus file and a QA file hold, and the one parser that checks either kind.

A :class:`FileKind` says which columns a file needs and uses, how one raw row becomes a
clean row, and what its ids are called; :func:`parse` reads a file of that kind and returns
the clean rows with their line numbers, every problem and every warning found (it stops only
at problems with the whole file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrag_flower.data.errors import DataError, DataWarning, PathLike
from fedrag_flower.data.fields import gold_ids, id_value, optional_str, present, text_value
from fedrag_flower.data.limits import DataLimits
from fedrag_flower.data.records import (
    Record,
    file_format,
    located_error,
    located_warning,
    read_records,
    unit,
)


@dataclass(frozen=True)
class FileKind:
    """One kind of data file.

    Attributes:
        required: columns every row needs.
        optional: further columns it uses; any other column is ignored with a warning.
        sized: text fields held to ``DataLimits.max_chunk_chars``.
        clean_row: turns a raw row into a clean row; raises DataError for a bad field.
        id_name: what a row's ``id`` is called in messages; ids are unique within a file.
        empty: what is wrong with a file without rows (the fix is added).
    """

    required: tuple[str, ...]
    optional: tuple[str, ...]
    sized: tuple[str, ...]
    clean_row: Callable[[Path, Record], dict]
    id_name: str
    empty: str

    @property
    def empty_message(self) -> str:
        columns = " and ".join(f"'{name}'" for name in self.required)
        return f"{self.empty}. Add rows with {columns}."


@dataclass
class Parsed:
    """Rows that passed every check, their positions, and every problem and warning found.

    ``unusable_ids`` are the ids of rows that were rejected: they are in the file, so a gold
    id naming one is not reported a second time as "not in the corpus".
    """

    path: Path
    rows: list[dict] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    problems: list[DataError] = field(default_factory=list)
    warnings: list[DataWarning] = field(default_factory=list)
    unusable_ids: set[str] = field(default_factory=set)


def _chunk_row(path: Path, record: Record) -> dict:
    return {
        "id": id_value(path, record, "id", "chunk id"),
        "text": text_value(path, record, "text", "chunk text"),
        "title": optional_str(path, record, "title"),
    }


def _question_row(path: Path, record: Record) -> dict:
    row: dict[str, Any] = {
        "query": text_value(path, record, "query", "query"),
        "response": text_value(path, record, "response", "response"),
    }
    name = "gold_ids" if present(record.values, "gold_ids") else "gold_id"
    try:
        row["gold_ids"] = gold_ids(record.values.get(name))
    except (TypeError, ValueError) as exc:
        raise located_error(path, f"{exc}.", row=record.row, field=name) from None
    if present(record.values, "id"):
        row["id"] = id_value(path, record, "id", "question id")
    category = optional_str(path, record, "category")
    if category is not None:
        row["category"] = category
    return row


CORPUS = FileKind(
    ("id", "text"), ("title",), ("text",), _chunk_row, "chunk id", "the corpus has no chunks"
)
QA = FileKind(
    ("query", "response"),
    ("gold_ids", "gold_id", "id", "category"),
    ("query", "response"),
    _question_row,
    "question id",
    "the QA file has no questions",
)


def parse(path: PathLike, kind: FileKind, limits: DataLimits | None = None) -> Parsed:
    """Every clean row of a file of ``kind``, every row-level problem (sorted by row), and
    every warning.

    Raises DataError for problems with the whole file (missing, unknown format, too large,
    unreadable, a missing column).
    """
    limits = limits or DataLimits()
    path, records, problems = read_records(path, limits.max_file_bytes)
    _check_columns(path, records, kind.required)
    parsed = Parsed(path, problems=problems, warnings=_ignored_columns(path, records, kind))
    first_row: dict[str, int] = {}
    for record in records:
        row = None
        if not record.damaged:  # a damaged row's bad bytes are reported already
            try:
                row = kind.clean_row(path, record)
                _check_sizes(path, record, row, kind, limits)
            except DataError as exc:
                parsed.problems.append(exc)
                row = None
        if row is not None:
            _add_unique(parsed, kind, record, row, first_row)
        elif isinstance(record.values.get("id"), str | int):
            parsed.unusable_ids.add(str(record.values["id"]).strip())
    parsed.problems.sort(key=lambda exc: exc.row or 0)
    if not records and not parsed.problems:
        parsed.problems.append(DataError(f"{path}: {kind.empty_message}", file=path))
    return parsed


def _add_unique(
    parsed: Parsed, kind: FileKind, record: Record, row: dict, first_row: dict[str, int]
) -> None:
    row_id = row.get("id")
    if row_id is not None and row_id in first_row:
        parsed.problems.append(
            located_error(
                parsed.path,
                f"duplicate {kind.id_name} '{row_id}' (also at {unit(parsed.path)} "
                f"{first_row[row_id]}). {kind.id_name.capitalize()}s must be unique: "
                "rename one or remove the duplicate.",
                row=record.row,
                field="id",
            )
        )
        return
    if row_id is not None:
        first_row[row_id] = record.row
    parsed.rows.append(row)
    parsed.positions.append(record.row)


def _check_sizes(path: Path, record: Record, row: dict, kind: FileKind, limits: DataLimits) -> None:
    for name in kind.sized:
        if len(row[name]) > limits.max_chunk_chars:
            raise located_error(
                path,
                f"{len(row[name]):,} characters, over the limit of {limits.max_chunk_chars:,} "
                "per chunk (DataLimits.max_chunk_chars; node config `max-chunk-chars`; "
                "`check-data --max-chunk-chars`). "
                "Split the text into smaller chunks, or raise the limit if it is meant.",
                row=record.row,
                field=name,
            )


def _check_columns(path: Path, records: list[Record], required: Sequence[str]) -> None:
    """For CSV and Parquet, a missing column is one problem, not one per row."""
    if file_format(path) == "jsonl" or not records:
        return
    columns = records[0].values.keys()
    missing = [name for name in required if name not in columns]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(repr(m) for m in missing)} (columns: "
            f"{', '.join(repr(c) for c in columns)}). Rename the column or add it.",
            file=path,
            field=missing[0],
        )


def _ignored_columns(path: Path, records: list[Record], kind: FileKind) -> list[DataWarning]:
    """One warning per column (CSV, Parquet) or key (JSONL) that the kind does not use."""
    used = set(kind.required + kind.optional)
    first_seen: dict[str, int] = {}
    for record in records:
        for name in record.values:
            if name not in used and name not in first_seen:
                first_seen[str(name)] = record.row
    known = ", ".join(f"'{name}'" for name in kind.required + kind.optional)
    jsonl = file_format(path) == "jsonl"
    return [
        located_warning(
            path,
            f"{'key' if jsonl else 'column'} '{name}' is not used and is ignored (used: "
            f"{known}). Rename it if it was meant as one of these.",
            row=row if jsonl else None,
            field=name,
        )
        for name, row in first_seen.items()
    ]


def raise_first(parsed: Parsed) -> None:
    """Raise the first problem of ``parsed`` (with a count of the others), if there is one."""
    if not parsed.problems:
        return
    first = parsed.problems[0]
    more = len(parsed.problems) - 1
    if more:
        # re-raise with a count, so one fix-and-retry cycle per problem is not the only option
        message = (
            f"{first} ({more} more problem{'s' if more > 1 else ''} in this file; "
            "`fedrag-flower check-data` lists them all)"
        )
        raise DataError(message, file=first.file, row=first.row, field=first.field)
    raise first
