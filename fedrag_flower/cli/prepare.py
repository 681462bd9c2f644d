"""``fedrag-flower prepare``: make the offline default models ready once after install.

    fedrag-flower prepare

The packaged generator ships as GGUF, which takes ~15-30 s to read; ``prepare`` converts it
once into the cache (``$FEDRAG_CACHE_DIR``, default ``~/.cache/fedrag_flower``) so every later
load takes seconds, and checks that the packaged retriever is installed.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``prepare`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "prepare",
        help="convert the packaged default generator into the cache (once, after install)",
        description="Convert the packaged default generator (GGUF) into a safetensors folder "
        "in the cache and check that the packaged default retriever is installed. Safe to "
        "re-run: a generator already converted is kept.",
    )
    parser.set_defaults(func=prepare)


def prepare(args: argparse.Namespace) -> int:
    """Print the folders the packaged generator and retriever load from."""
    from fedrag_flower.models import (
        PACKAGED_RETRIEVER,
        prepare_packaged_generator,
        resolve_retriever,
    )

    print(f"generator: {prepare_packaged_generator()}")
    print(f"retriever: {resolve_retriever(PACKAGED_RETRIEVER)}")
    return 0
