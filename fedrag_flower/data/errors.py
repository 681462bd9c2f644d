"""What data loading reports: :class:`DataError` (unusable) and :class:`DataWarning` (usable,
probably not as meant), each naming file, row and field."""

from __future__ import annotations

from pathlib import Path

PathLike = str | Path


class _Located:
    """A message with where it applies: ``file``, ``row`` (1-based line number, or row
    number for Parquet) and ``field``, ``None`` where they do not apply."""

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


class DataError(_Located, ValueError):
    """A data file (or data passed in) that cannot be used, with where and what to do.

    ``file``, ``row`` (1-based line number, or row number for Parquet) and ``field`` are
    also kept as attributes, ``None`` where they do not apply.
    """


class DataWarning(_Located, UserWarning):
    """Data that can be used but probably not as meant (an ignored column, a passage the
    retriever only reads the start of), with the same ``file``, ``row`` and ``field``."""
