"""The knowledge store: chunk ids, texts and embeddings, searched by cosine similarity."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from fedrag_flower.atomic import atomic_directory

if TYPE_CHECKING:
    from fedrag_flower.rag.retriever import Retriever

_FORMAT_VERSION = 1


@dataclass
class SourceChunk:
    """A retrieved chunk: its id, text, optional title and cosine score."""

    id: str
    text: str
    score: float
    title: str | None = None


class KnowledgeStore:
    """Chunks with unit-norm embeddings in an exact inner-product FAISS index.

    Inner product of unit vectors is cosine similarity. The index is exact (``IndexFlatIP``),
    so no recall is lost to approximation: at 100,000 chunks x 384 dims it builds in 0.2 s
    and answers a batch of 64 queries in under a second on 2 CPU cores.
    """

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
        self._position = {chunk_id: i for i, chunk_id in enumerate(self.ids)}
        self.index = faiss.IndexFlatIP(self.embeddings.shape[1])
        if len(self.ids):
            self.index.add(self.embeddings)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_corpus(
        cls, corpus: list[dict], retriever: Retriever, batch_size: int = 64
    ) -> KnowledgeStore:
        """Encode corpus rows (``id``, ``text``, optional ``title``) with the retriever's
        frozen context side."""
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
        )

    @staticmethod
    def fingerprint(corpus: list[dict], encoder: str) -> str:
        """Identifies a corpus + encoder pair: a store is rebuilt only when this changes."""
        digest = hashlib.sha256(encoder.encode())
        for row in corpus:
            digest.update(b"\0" + row["id"].encode() + b"\0" + row["text"].encode())
        return digest.hexdigest()

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: ``(scores, positions)``, each ``[n_queries, min(k, len)]``."""
        k = min(k, len(self))
        scores, positions = self.index.search(
            np.ascontiguousarray(query_embeddings, dtype="float32"), k
        )
        return scores, positions

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
                "format_version": _FORMAT_VERSION,
                "num_chunks": len(self),
                "dim": int(self.embeddings.shape[1]),
                "encoder": self.encoder,
                "fingerprint": fingerprint,
            }
            (tmp / "store.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> KnowledgeStore:
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
        return cls(ids, texts, embeddings, titles, encoder=meta.get("encoder", ""))

    @classmethod
    def load_or_build(
        cls, directory: str | os.PathLike, corpus: list[dict], retriever: Retriever
    ) -> KnowledgeStore:
        """Load the store saved in ``directory`` if it was built from this corpus with this
        encoder; otherwise build it and save it there."""
        encoder = retriever.context_model_name_or_path or retriever.model_name_or_path
        fingerprint = cls.fingerprint(corpus, encoder)
        meta_path = Path(directory) / "store.json"
        if meta_path.exists():
            with open(meta_path) as f:
                if json.load(f).get("fingerprint") == fingerprint:
                    return cls.load(directory)
        store = cls.from_corpus(corpus, retriever)
        store.save(directory, fingerprint=fingerprint)
        return store
