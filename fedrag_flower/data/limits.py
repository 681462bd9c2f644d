"""Size limits on a site's files, so that a wrong export fails before training, not in it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataLimits:
    """How large a site's data may be.

    Attributes:
        max_file_bytes: the largest corpus or QA file, in bytes (files are read into memory
            whole). Default 1 GiB. ``fedrag-flower check-data --max-file-mb``.
        max_chunk_chars: the longest text field, in characters: a chunk's ``text``, a
            question's ``query`` or ``response``. Default 50,000 (about 40 times the 256
            word pieces the default retriever reads; a longer chunk is almost always a whole
            document that was not split). ``fedrag-flower check-data --max-chunk-chars``.
    """

    max_file_bytes: int = 1 << 30
    max_chunk_chars: int = 50_000

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_chunk_chars"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"DataLimits.{name} must be at least 1, got {getattr(self, name)}."
                )


def size_text(n_bytes: int) -> str:
    """``n_bytes`` for people: ``"5.2 MB"``, ``"812 bytes"``."""
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes} bytes"
