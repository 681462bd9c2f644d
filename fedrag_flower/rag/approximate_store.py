"""Approximate FAISS knowledge stores for large corpora (HNSW graph, IVF clusters), and
their recall against exact search.

recall@k = mean over queries q of |A_k(q) ∩ E_k(q)| / |E_k(q)|, where A_k is the
approximate index's top-k and E_k exact search's top-k over the same embeddings.
Each store measures it when built, on probe queries drawn from its own chunks (the
normalised midpoint of two random chunks: a query that lies between documents, as real
ones do, rather than on one of them), prints it, and keeps it as ``recall_at_10``.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from fedrag_flower.rag.base_store import BaseKnowledgeStore


def exact_top_k(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Positions of the exact inner-product top-k of each query, ``[n_queries, k]``."""
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype="float32"))
    return index.search(np.ascontiguousarray(queries, dtype="float32"), min(k, len(embeddings)))[1]


def recall_at_k(store: BaseKnowledgeStore, queries: np.ndarray, k: int = 10) -> float:
    """Fraction of exact search's top-k that ``store.search`` also returns in its top-k."""
    exact = exact_top_k(store.embeddings, queries, k)
    found = store.search(queries, k)[1]
    hits = sum(len(set(e.tolist()) & set(f.tolist())) for e, f in zip(exact, found))
    return hits / exact.size


def probe_queries(embeddings: np.ndarray, n: int = 256, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors, each the normalised midpoint of two random stored chunks."""
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, len(embeddings), size=(n, 2))
    queries = embeddings[pairs[:, 0]] + embeddings[pairs[:, 1]]
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    return (queries / np.maximum(norms, 1e-12)).astype("float32")


class _ApproximateFaissStore(BaseKnowledgeStore):
    """Shared part: build the FAISS index, then measure and print its recall@10."""

    def _build_index(self) -> None:
        self.index = self._make_index(len(self.ids))
        if len(self.ids):
            if not self.index.is_trained:
                self.index.train(self.embeddings)
            self.index.add(self.embeddings)
        self.recall_at_10 = float("nan")
        if len(self.ids) > 10:
            self.recall_at_10 = recall_at_k(self, probe_queries(self.embeddings), 10)
            print(
                f"knowledge store: {self.backend} over {len(self)} chunks, recall@10 against "
                f"exact search = {self.recall_at_10:.3f} (256 probe queries)",
                flush=True,
            )

    def _make_index(self, n: int) -> faiss.Index:
        raise NotImplementedError

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        return self.index.search(np.ascontiguousarray(query_embeddings, dtype="float32"), k)


class FaissHNSWKnowledgeStore(_ApproximateFaissStore):
    """Inner-product search in a FAISS HNSW graph (``IndexHNSWFlat``).

    Args (keywords, besides the ``KnowledgeStore`` ones):
        m: graph neighbours per node (memory ~ n * (4 * dim + 8 * m) bytes).
        ef_construction: candidate list while building (build time vs graph quality).
        ef_search: candidate list per query (latency vs recall).
    """

    backend = "faiss-hnsw"

    def __init__(
        self,
        ids: list[str],
        texts: list[str],
        embeddings: np.ndarray,
        titles: list[str | None] | None = None,
        encoder: str = "",
        m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 64,
    ) -> None:
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        super().__init__(ids, texts, embeddings, titles, encoder)

    def _make_index(self, n: int) -> faiss.Index:
        index = faiss.IndexHNSWFlat(self.embeddings.shape[1], self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def options(self) -> dict:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search}


class FaissIVFKnowledgeStore(_ApproximateFaissStore):
    """Inner-product search over k-means clusters (``IndexIVFFlat``): each query scans the
    ``nprobe`` clusters whose centroids are nearest.

    Args (keywords, besides the ``KnowledgeStore`` ones):
        nlist: clusters; default ``4 * sqrt(n)``, at most ``n / 39`` (FAISS wants >= 39
            training points per centroid).
        nprobe: clusters scanned per query (latency vs recall).
    """

    backend = "faiss-ivf"

    def __init__(
        self,
        ids: list[str],
        texts: list[str],
        embeddings: np.ndarray,
        titles: list[str | None] | None = None,
        encoder: str = "",
        nlist: int | None = None,
        nprobe: int = 16,
    ) -> None:
        self.nlist, self.nprobe = nlist, nprobe
        super().__init__(ids, texts, embeddings, titles, encoder)

    def _make_index(self, n: int) -> faiss.Index:
        if self.nlist is None:
            self.nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        dim = self.embeddings.shape[1]
        self._quantizer = faiss.IndexFlatIP(dim)  # the IVF index does not own it
        index = faiss.IndexIVFFlat(self._quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = self.nprobe
        return index

    def options(self) -> dict:
        return {"nlist": self.nlist, "nprobe": self.nprobe}
