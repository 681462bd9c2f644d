"""The default knowledge store: exact inner-product search in FAISS."""

from __future__ import annotations

import faiss
import numpy as np

from fedrag_flower.rag.base_store import BaseKnowledgeStore, SourceChunk

__all__ = ["KnowledgeStore", "SourceChunk"]


class KnowledgeStore(BaseKnowledgeStore):
    """Chunks with unit-norm embeddings in an exact inner-product FAISS index.

    Inner product of unit vectors is cosine similarity. The index is exact (``IndexFlatIP``),
    so no recall is lost to approximation: at 100,000 chunks x 384 dims it builds in 0.2 s
    and answers a batch of 64 queries in under a second on 2 CPU cores. Other backends
    (``FaissHNSWKnowledgeStore``, ``FaissIVFKnowledgeStore``, ``QdrantKnowledgeStore``)
    share its interface, saved format and behaviour (``BaseKnowledgeStore``).
    """

    backend = "faiss"

    def _build_index(self) -> None:
        self.index = faiss.IndexFlatIP(self.embeddings.shape[1])
        if len(self.ids):
            self.index.add(self.embeddings)

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by cosine: ``(scores, positions)``, each ``[n_queries, min(k, len)]``."""
        k = min(k, len(self))
        scores, positions = self.index.search(
            np.ascontiguousarray(query_embeddings, dtype="float32"), k
        )
        return scores, positions
