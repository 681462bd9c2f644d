"""The knowledge-store interface every backend implements (FAISS exact, FAISS HNSW/IVF, Qdrant).

A store holds chunk ids, texts, titles and unit-norm embeddings in memory, in positions
0..n-1, and answers top-k inner-product (cosine) search over them. Backends differ only in
the index that answers ``search``. The embeddings stay in the store whatever the backend:
LSR scores candidates against them with the live query encoder, so the index is never the
only copy. The saved folder (``chunks.jsonl``, ``embeddings.npy``, ``store.json``) is the
same for every backend, so a store saved by one loads into any other.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from fedrag_flower.atomic import atomic_directory

if TYPE_CHECKING:
    from fedrag_flower.rag.retriever import Retriever

FORMAT_VERSION = 1

StoreT = TypeVar("StoreT", bound="BaseKnowledgeStore")


@dataclass
class SourceChunk:
    """A retrieved chunk: its id, text, optional title and cosine score."""

    id: str
    text: str
    score: float
    title: str | None = None


class BaseKnowledgeStore(ABC):
    """Chunks with unit-norm embeddings, searched by inner product (= cosine similarity).

    Subclasses set ``backend`` (the name in ``store.json`` and in the run config), build
    their index in ``_build_index`` and answer ``search``; extra constructor keywords are
    backend options (index parameters, a Qdrant location), reported by ``options()``.
    """

    backend: ClassVar[str]

    def __init__(
        self,
        ids: list[str],
        texts: list[str],
        embeddings: np.ndarray,
        titles: list[str | None] | None = None,
        encoder: str = "",
    ) -> None:
        if len(ids) != len(texts) or len(ids) != len(embeddings):
            raise ValueError(
                f"ids ({len(ids)}), texts ({len(texts)}) and embeddings ({len(embeddings)}) "
                "must have the same length"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("chunk ids must be unique")
        self.ids = list(ids)
        self.texts = list(texts)
        self.titles = list(titles) if titles is not None else [None] * len(ids)
        self.embeddings = np.ascontiguousarray(embeddings, dtype="float32")
        self.encoder = encoder
        # What encoded the embeddings when a retriever adapts its chunk side: None = the
        # frozen base encoder (see Retriever.chunk_encoding, RAGSystem.refresh_index).
        self.chunk_encoding: tuple[int, int] | None = None
        self._position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        self._build_index()

    def _build_index(self) -> None:
        """Index ``self.embeddings`` (called once the chunks are set)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, chunk_id: object) -> bool:
        return chunk_id in self._position

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    # -- what a backend provides ---------------------------------------------------------

    @abstractmethod
    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product: ``(scores, positions)``, each ``[n_queries, min(k, len)]``,
        best first; a position of -1 marks a slot the index could not fill."""

    def options(self) -> dict[str, Any]:
        """Backend options worth recording in ``store.json`` (index parameters)."""
        return {}

    def replace_embeddings(self, embeddings: np.ndarray, chunk_encoding=None) -> None:
        """Re-index the same chunks under new embeddings (a re-encoded corpus)."""
        if embeddings.shape != self.embeddings.shape:
            raise ValueError(
                f"new embeddings have shape {embeddings.shape}, the store holds "
                f"{self.embeddings.shape}"
            )
        self.embeddings = np.ascontiguousarray(embeddings, dtype="float32")
        self.chunk_encoding = chunk_encoding
        self._build_index()

    # -- shared behaviour ----------------------------------------------------------------

    @classmethod
    def from_corpus(
        cls: type[StoreT],
        corpus: list[dict],
        retriever: Retriever,
        batch_size: int = 64,
        **options: Any,
    ) -> StoreT:
        """Encode corpus rows (``id``, ``text``, optional ``title``) with the retriever's
        frozen context side; ``options`` go to the backend's constructor."""
        if not corpus:
            raise ValueError("the corpus is empty: a knowledge store needs at least one chunk")
        texts = [row["text"] for row in corpus]
        embeddings = retriever.encode_chunks(
            texts, batch_size=batch_size, show_progress=len(texts) > 2000
        )
        return cls(
            [row["id"] for row in corpus],
            texts,
            embeddings,
            [row.get("title") for row in corpus],
            encoder=retriever.context_model_name_or_path or retriever.model_name_or_path,
            **options,
        )

    @staticmethod
    def fingerprint(corpus: list[dict], encoder: str) -> str:
        """Identifies a corpus + encoder pair: a store is rebuilt only when this changes."""
        digest = hashlib.sha256(encoder.encode())
        for row in corpus:
            digest.update(b"\0" + row["id"].encode() + b"\0" + row["text"].encode())
        return digest.hexdigest()

    def chunks(self, positions: np.ndarray, scores: np.ndarray) -> list[SourceChunk]:
        return [
            SourceChunk(self.ids[p], self.texts[p], float(s), self.titles[p])
            for p, s in zip(positions.tolist(), scores.tolist())
            if p >= 0
        ]

    def position(self, chunk_id: str) -> int:
        return self._position[chunk_id]

    def save(self, directory: str | os.PathLike, fingerprint: str = "") -> None:
        """Write ``chunks.jsonl``, ``embeddings.npy`` and ``store.json`` into ``directory``.

        The folder is written beside its destination and renamed into place, so an
        interrupted save never leaves a half-written store where a good one was.
        """
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            with open(tmp / "chunks.jsonl", "w", encoding="utf-8") as f:
                for chunk_id, text, title in zip(self.ids, self.texts, self.titles):
                    f.write(json.dumps({"id": chunk_id, "text": text, "title": title}) + "\n")
            np.save(tmp / "embeddings.npy", self.embeddings)
            meta = {
                "format_version": FORMAT_VERSION,
                "num_chunks": len(self),
                "dim": self.dim,
                "encoder": self.encoder,
                "fingerprint": fingerprint,
                "backend": self.backend,
                "options": self.options(),
            }
            (tmp / "store.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls: type[StoreT], directory: str | os.PathLike, **options: Any) -> StoreT:
        """Load a saved store (written by any backend) into this backend."""
        directory = Path(directory)
        meta_path = directory / "store.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{directory} is not a saved knowledge store (no store.json)")
        meta = json.loads(meta_path.read_text())
        ids, texts, titles = [], [], []
        with open(directory / "chunks.jsonl", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                ids.append(row["id"])
                texts.append(row["text"])
                titles.append(row.get("title"))
        embeddings = np.load(directory / "embeddings.npy")
        return cls(ids, texts, embeddings, titles, encoder=meta.get("encoder", ""), **options)

    @classmethod
    def load_or_build(
        cls: type[StoreT],
        directory: str | os.PathLike,
        corpus: list[dict],
        retriever: Retriever,
        **options: Any,
    ) -> StoreT:
        """Load the store saved in ``directory`` if it was built from this corpus with this
        encoder; otherwise build it and save it there."""
        encoder = retriever.context_model_name_or_path or retriever.model_name_or_path
        fingerprint = cls.fingerprint(corpus, encoder)
        meta_path = Path(directory) / "store.json"
        if meta_path.exists():
            with open(meta_path) as f:
                if json.load(f).get("fingerprint") == fingerprint:
                    return cls.load(directory, **options)
        store = cls.from_corpus(corpus, retriever, **options)
        store.save(directory, fingerprint=fingerprint)
        return store


def pad_results(
    scores: list[list[float]], positions: list[list[int]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ragged per-query hits as ``[n, k]`` arrays, missing slots scored -inf at position -1."""
    out_scores = np.full((len(scores), k), -np.inf, dtype="float32")
    out_positions = np.full((len(scores), k), -1, dtype="int64")
    for row, (s, p) in enumerate(zip(scores, positions)):
        out_scores[row, : len(s)] = s[:k]
        out_positions[row, : len(p)] = p[:k]
    return out_scores, out_positions
