"""The folder where fedrag-flower keeps what it derives once and reuses: converted base
models and the sites' built knowledge-store indexes."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder: ``$FEDRAG_CACHE_DIR`` if set, else ``~/.cache/fedrag_flower``."""
    return Path(os.environ.get("FEDRAG_CACHE_DIR", Path.home() / ".cache" / "fedrag_flower"))
