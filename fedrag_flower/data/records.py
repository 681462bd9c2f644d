"""Reading the rows of a JSONL, CSV or Parquet file, each with its line (or row) number.

This is the only module that knows file formats. It checks nothing about the fields: a
:class:`Record` is a raw row, and a file's problems (bad bytes, invalid JSON, a CSV row with
too many values) come back as :class:`DataError` s naming file and line, so that the rest of
the file can still be checked.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from fedrag_flower.data.errors import DataError, PathLike

FORMATS = {".jsonl": "jsonl", ".json-lines": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_ACCEPTED = ".jsonl (or .json-lines), .csv, .parquet"


@dataclass
class Record:
    """One raw row of a file and where it came from (1-based line, or row for Parquet)."""

    row: int
    values: dict


def file_format(path: Path) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"``, from the file's extension."""
    return FORMATS[path.suffix.lower()]


def unit(path: Path) -> str:
    """What a position in ``path`` is called: ``"row"`` for Parquet, else ``"line"``."""
    return "row" if FORMATS.get(path.suffix.lower()) == "parquet" else "line"


def located_error(
    path: Path, what: str, *, row: int | None = None, field: str | None = None
) -> DataError:
    """A DataError whose message starts with ``path, line N, field 'name':``."""
    where = str(path)
    if row is not None:
        where += f", {unit(path)} {row}"
    if field is not None:
        where += f", field '{field}'"
    return DataError(f"{where}: {what}", file=path, row=row, field=field)


def _checked_path(path: PathLike) -> tuple[Path, str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
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
    return path, FORMATS[suffix]


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
                located_error(
                    path,
                    f"bytes that are not UTF-8 (byte {exc.start + 1} of the line: "
                    f"{line[exc.start : exc.start + 4]!r}). Save the file as UTF-8 "
                    "(e.g. `iconv -f latin1 -t utf-8`).",
                    row=number,
                )
            )
    return None, problems


def read_records(path: PathLike) -> tuple[Path, list[Record], list[DataError]]:
    """Raw rows of a file, and the rows that could not be read at all.

    Raises DataError for problems with the whole file (missing, unknown format, unreadable).
    """
    path, fmt = _checked_path(path)
    if fmt == "parquet":
        return path, _read_parquet(path), []
    text, problems = _decode(path, path.read_bytes())
    if text is None:
        return path, [], problems
    if fmt == "jsonl":
        return (path, *_read_jsonl(path, text))
    return (path, *_read_csv(path, text))


def _read_jsonl(path: Path, text: str) -> tuple[list[Record], list[DataError]]:
    records, problems = [], []
    # split on "\n" only: str.splitlines would also split on U+2028 inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(
                located_error(
                    path,
                    f"invalid JSON ({exc.msg} at column {exc.colno}). Each line must be one "
                    'JSON object, e.g. {"id": "c1", "text": "..."}.',
                    row=number,
                )
            )
            continue
        if not isinstance(values, dict):
            problems.append(
                located_error(
                    path,
                    f"expected a JSON object, got {type(values).__name__}. Each line must be "
                    "one JSON object.",
                    row=number,
                )
            )
            continue
        records.append(Record(number, values))
    return records, problems


def _read_csv(path: Path, text: str) -> tuple[list[Record], list[DataError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    except csv.Error as exc:
        raise located_error(path, f"unreadable CSV header ({exc}).", row=1) from exc
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
            raise located_error(
                path, f"unreadable CSV ({exc}); check the quoting of this row.", row=start
            ) from exc
        last_line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(columns):
            problems.append(
                located_error(
                    path,
                    f"{len(cells)} values but the header has {len(columns)} columns. Quote "
                    'values that contain commas ("like, this").',
                    row=start,
                )
            )
            continue
        records.append(Record(start, dict(zip(columns, cells, strict=False))))
    return records, problems


def _read_parquet(path: Path) -> list[Record]:
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
    return [Record(number, values) for number, values in enumerate(table.to_pylist(), 1)]
