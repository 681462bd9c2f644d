"""A knowledge store searched by Qdrant: embedded in the process by default, or a server."""

from __future__ import annotations

import hashlib

import numpy as np

from fedrag_flower.rag.base_store import BaseKnowledgeStore, pad_results


class QdrantKnowledgeStore(BaseKnowledgeStore):
    """Chunks in a Qdrant collection, searched by dot product (= cosine on unit vectors).

    Point ``i`` of the collection is chunk position ``i``; its payload keeps ``chunk_id``,
    ``title`` and ``text``, so the collection is readable on its own (Qdrant's dashboard,
    filters, other tools). Ids, texts and embeddings also stay in memory like every store's
    (LSR scores candidates against the embeddings).

    Args (keywords, besides the ``KnowledgeStore`` ones):
        location: embedded mode, no server: ``":memory:"`` (default) or a folder where
            Qdrant keeps the collection on disk.
        url: a Qdrant server (``http://host:6333``); overrides ``location``. For a
            coordinator or a site with a large corpus: the server indexes with HNSW.
        collection: collection name; default ``fedrag-<hash of ids and embeddings>``. A
            collection of that name already holding as many points is reused, not
            re-uploaded (a server, or an on-disk folder, keeps it between runs).
        api_key: for a server that asks for one.

    qdrant-client's embedded mode scans every vector per query in numpy (exact search);
    it warns above 20,000 points, where a server is the better choice.
    """

    backend = "qdrant"

    def __init__(
        self,
        ids: list[str],
        texts: list[str],
        embeddings: np.ndarray,
        titles: list[str | None] | None = None,
        encoder: str = "",
        location: str = ":memory:",
        url: str = "",
        collection: str | None = None,
        api_key: str | None = None,
    ) -> None:
        try:
            from qdrant_client import QdrantClient, models
            from qdrant_client.http.exceptions import ResponseHandlingException
        except ImportError as error:
            raise ImportError(
                "the Qdrant knowledge store needs qdrant-client: "
                "pip install 'fedrag-flower[qdrant]'"
            ) from error
        super().__init__(ids, texts, embeddings, titles, encoder)
        self.location, self.url = location, url
        if url:
            self.client = QdrantClient(url=url, api_key=api_key)
        elif location == ":memory:":
            self.client = QdrantClient(location=":memory:")
        else:
            self.client = QdrantClient(path=str(location))
        self._named = collection is not None
        self.collection = collection or f"fedrag-{self.content_hash()[:16]}"
        try:
            self._fill_collection(models)
        except ResponseHandlingException as error:  # no answer: name the server, say what to do
            raise ConnectionError(
                f"the Qdrant server at store-url {url!r} does not answer ({error}): start it "
                "(docker compose: --profile qdrant) or fix the site's store-url"
            ) from None

    def _build_index(self) -> None:
        """Nothing yet: the collection is filled once the client exists (``__init__``)."""

    def content_hash(self) -> str:
        """SHA-256 of the chunk ids and embeddings: names the collection."""
        digest = hashlib.sha256()
        for chunk_id in self.ids:
            digest.update(chunk_id.encode() + b"\0")
        digest.update(self.embeddings.tobytes())
        return digest.hexdigest()

    def replace_embeddings(self, embeddings: np.ndarray, chunk_encoding=None) -> None:
        """Re-upload the chunks under new embeddings: into a collection named after them,
        or into the named collection, emptied first."""
        from qdrant_client import models

        super().replace_embeddings(embeddings, chunk_encoding)
        if self._named:
            self.client.delete_collection(self.collection)
        else:
            self.collection = f"fedrag-{self.content_hash()[:16]}"
        self._fill_collection(models)

    def _fill_collection(self, models) -> None:
        if self.client.collection_exists(self.collection):
            if self.client.count(self.collection, exact=True).count == len(self):
                return
            self.client.delete_collection(self.collection)
        self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=self.dim, distance=models.Distance.DOT),
        )
        if len(self):
            self.client.upload_collection(
                self.collection,
                vectors=self.embeddings,
                payload=(
                    {"chunk_id": i, "title": t, "text": x}
                    for i, t, x in zip(self.ids, self.titles, self.texts)
                ),
                ids=range(len(self)),
                batch_size=256,
                wait=True,
            )

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by dot product: ``(scores, positions)``, each ``[n_queries, min(k, len)]``."""
        from qdrant_client import models

        k = min(k, len(self))
        queries = np.asarray(query_embeddings, dtype="float32")
        if k == 0 or len(queries) == 0:
            return np.zeros((len(queries), k), "float32"), np.zeros((len(queries), k), "int64")
        responses = self.client.query_batch_points(
            self.collection,
            requests=[
                models.QueryRequest(query=q.tolist(), limit=k, with_payload=False) for q in queries
            ],
        )
        return pad_results(
            [[p.score for p in r.points] for r in responses],
            [[int(p.id) for p in r.points] for r in responses],
            k,
        )

    def options(self) -> dict:
        return {"location": self.location, "url": self.url, "collection": self.collection}

    def close(self) -> None:
        """Release the client (an on-disk embedded collection is locked while open)."""
        self.client.close()
