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

from fedrag_flower.data.errors import DataError, DataWarning, PathLike
from fedrag_flower.data.limits import size_text

FORMATS = {".jsonl": "jsonl", ".json-lines": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_ACCEPTED = ".jsonl (or .json-lines), .csv, .parquet"


@dataclass
class Record:
    """One raw row of a file and where it came from (1-based line, or row for Parquet).

    ``damaged`` marks a row with bytes that are not UTF-8 (already reported): its values
    hold U+FFFD in their place, good enough to learn its id but not to use it.
    """

    row: int
    values: dict
    damaged: bool = False


def file_format(path: Path) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"``, from the file's extension."""
    return FORMATS[path.suffix.lower()]


def unit(path: Path) -> str:
    """What a position in ``path`` is called: ``"row"`` for Parquet, else ``"line"``."""
    return "row" if FORMATS.get(path.suffix.lower()) == "parquet" else "line"


def _where(path: Path, row: int | None, field: str | None) -> str:
    where = str(path)
    if row is not None:
        where += f", {unit(path)} {row}"
    if field is not None:
        where += f", field '{field}'"
    return where


def located_error(
    path: Path, what: str, *, row: int | None = None, field: str | None = None
) -> DataError:
    """A DataError whose message starts with ``path, line N, field 'name':``."""
    return DataError(f"{_where(path, row, field)}: {what}", file=path, row=row, field=field)


def located_warning(
    path: Path, what: str, *, row: int | None = None, field: str | None = None
) -> DataWarning:
    """A DataWarning whose message starts with ``path, line N, field 'name':``."""
    return DataWarning(f"{_where(path, row, field)}: {what}", file=path, row=row, field=field)


def _checked_path(path: PathLike, max_file_bytes: int) -> tuple[Path, str]:
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in FORMATS)
        found = f" Data files in it: {', '.join(inside[:5])}." if inside else ""
        raise DataError(
            f"{path}: is a directory, not a file. Give the path of one {_ACCEPTED} file.{found}",
            file=path,
        )
    if suffix not in FORMATS:
        hint = ""
        if suffix == ".json":
            hint = " A .json file must be JSON Lines (one object per line) saved as .jsonl."
        raise DataError(
            f"{path}: unknown data format '{suffix or '(no extension)'}'. Accepted formats: "
            f"{_ACCEPTED}; rename or convert the file.{hint}",
            file=path,
        )
    if not path.exists():
        raise DataError(
            f"{path}: does not exist. Check the path (relative to {Path.cwd()}).", file=path
        )
    if not path.is_file():
        raise DataError(f"{path}: not a regular file. Give the path of a data file.", file=path)
    size = path.stat().st_size
    if size > max_file_bytes:
        raise DataError(
            f"{path}: the file is {size_text(size)}, over the limit of "
            f"{size_text(max_file_bytes)} per file (DataLimits.max_file_bytes; node config "
            "`max-file-mb`; `check-data --max-file-mb`). Split it, or raise the limit if it "
            "is meant.",
            file=path,
        )
    return path, FORMATS[suffix]


_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def _decode(path: Path, data: bytes) -> tuple[str, set[int], list[DataError]]:
    """The file's text, the numbers of its lines that are not UTF-8, and one problem each.

    A UTF-8 byte-order mark at the start is dropped (spreadsheet programs write one); a
    UTF-16 or UTF-32 one is refused. A line with bad bytes is reported and kept with U+FFFD
    in their place, so that line numbers stay right and the rest of the file is checked.
    """
    for mark, encoding in _OTHER_BOMS.items():
        if data.startswith(mark):
            raise DataError(
                f"{path}: the file is {encoding} (it starts with a {encoding} byte-order mark). "
                "Save it as UTF-8 (e.g. `iconv -f utf-16 -t utf-8`).",
                file=path,
            )
    data = data.removeprefix(_UTF8_BOM)
    try:
        return data.decode("utf-8"), set(), []
    except UnicodeDecodeError:
        pass
    bad_lines, problems, lines = set(), [], []
    # split on b"\n" only, as the readers do, so that line numbers agree
    for number, line in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append(line.decode("utf-8", errors="replace"))
            bad_lines.add(number)
            problems.append(
                located_error(
                    path,
                    f"bytes that are not UTF-8 (byte {exc.start + 1} of the line: "
                    f"{line[exc.start : exc.start + 4]!r}). Save the file as UTF-8 "
                    "(e.g. `iconv -f latin1 -t utf-8`).",
                    row=number,
                )
            )
    return "\n".join(lines), bad_lines, problems


def read_records(
    path: PathLike, max_file_bytes: int = 1 << 30
) -> tuple[Path, list[Record], list[DataError]]:
    """Raw rows of a file, and the rows that could not be read.

    Raises DataError for problems with the whole file (a directory, missing, unknown
    format, over ``max_file_bytes``, unreadable, not UTF-8 at all).
    """
    path, fmt = _checked_path(path, max_file_bytes)
    if fmt == "parquet":
        return path, _read_parquet(path), []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}).", file=path) from exc
    text, bad_lines, problems = _decode(path, data)
    read = _read_jsonl if fmt == "jsonl" else _read_csv
    records, row_problems = read(path, text, bad_lines)
    return path, records, problems + row_problems


def _read_jsonl(path: Path, text: str, bad_lines: set[int]) -> tuple[list[Record], list[DataError]]:
    records, problems = [], []
    # split on "\n" only: str.splitlines would also split on U+2028 inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            values = json.loads(line)
        except json.JSONDecodeError as exc:
            if number in bad_lines:
                continue  # reported as bad bytes already
            # json's messages may end in "at" ("Unterminated string starting at")
            what = exc.msg.removesuffix(" at")
            problems.append(
                located_error(
                    path,
                    f"invalid JSON ({what} at column {exc.colno}). Each line must be one "
                    'JSON object, e.g. {"id": "c1", "text": "..."}.',
                    row=number,
                )
            )
            continue
        if not isinstance(values, dict):
            if number in bad_lines:
                continue
            problems.append(
                located_error(
                    path,
                    f"expected a JSON object, got {type(values).__name__}. Each line must be "
                    "one JSON object.",
                    row=number,
                )
            )
            continue
        records.append(Record(number, values, damaged=number in bad_lines))
    return records, problems


def _read_csv(path: Path, text: str, bad_lines: set[int]) -> tuple[list[Record], list[DataError]]:
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
        damaged = any(start <= number <= last_line for number in bad_lines)
        records.append(Record(start, dict(zip(columns, cells, strict=False)), damaged))
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
