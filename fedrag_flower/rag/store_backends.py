"""Knowledge-store backends by name: what ``store_backend`` (library) and the run-config
key ``store-backend`` choose from."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fedrag_flower.rag.approximate_store import FaissHNSWKnowledgeStore, FaissIVFKnowledgeStore
from fedrag_flower.rag.base_store import BaseKnowledgeStore
from fedrag_flower.rag.knowledge_store import KnowledgeStore
from fedrag_flower.rag.qdrant_store import QdrantKnowledgeStore

STORE_BACKENDS: dict[str, type[BaseKnowledgeStore]] = {
    "faiss": KnowledgeStore,  # exact inner product (the default)
    "faiss-hnsw": FaissHNSWKnowledgeStore,  # approximate: HNSW graph
    "faiss-ivf": FaissIVFKnowledgeStore,  # approximate: k-means clusters
    "qdrant": QdrantKnowledgeStore,  # embedded (":memory:" or a folder) or a server URL
}


def store_class(backend: str) -> type[BaseKnowledgeStore]:
    """The store class of ``backend``; an unknown name is an error that lists the known ones."""
    try:
        return STORE_BACKENDS[backend]
    except KeyError:
        raise ValueError(
            f"unknown knowledge-store backend {backend!r}; choose one of "
            + ", ".join(repr(b) for b in STORE_BACKENDS)
        ) from None


def store_options(backend: str, url: str = "") -> dict[str, Any]:
    """Constructor options from the run config's flat keys: ``store-url`` is a Qdrant
    server's address (empty: embedded Qdrant); other backends take no URL."""
    if url and backend != "qdrant":
        raise ValueError(
            f"run-config 'store-url' ({url!r}) is only for store-backend 'qdrant', not {backend!r}"
        )
    return {"url": url} if url else {}


def load_store(
    directory: str | os.PathLike, backend: str | None = None, **options: Any
) -> BaseKnowledgeStore:
    """Load a saved store into ``backend`` (default: the backend it was saved from;
    ``faiss`` for stores saved before backends existed)."""
    if backend is None:
        meta_path = Path(directory) / "store.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        backend = meta.get("backend", "faiss")
    return store_class(backend).load(directory, **options)
