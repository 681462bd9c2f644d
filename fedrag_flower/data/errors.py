"""The one error type of data loading: :class:`DataError`, naming file, row and field."""

from __future__ import annotations

from pathlib import Path

PathLike = str | Path


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
