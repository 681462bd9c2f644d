"""A RAG system as a LlamaIndex retriever and query engine.

>>> from fedrag_flower.rag import RAGSystem
>>> from fedrag_flower.integrations.llama_index import LlamaIndexQueryEngine
>>> engine = LlamaIndexQueryEngine(rag_system=RAGSystem.from_pretrained("outputs/run-.../final"))
>>> response = engine.query("How long does a building permit take?")
>>> response.response, [(n.node.id_, n.score) for n in response.source_nodes]

Both answer with the system's own retriever, store and generator: the nodes are the
chunks ``RAGSystem.retrieve`` returns (node id = chunk id, ``title`` in the metadata, the
cosine score), the answer is ``RAGSystem.query``'s.
"""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.base.response.schema import Response
    from llama_index.core.query_engine import CustomQueryEngine
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as error:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "the LlamaIndex bridge needs llama-index-core: pip install 'fedrag-flower[llamaindex]'"
    ) from error

from fedrag_flower.rag.base_store import SourceChunk
from fedrag_flower.rag.system import RAGSystem


def source_nodes(sources: list[SourceChunk]) -> list[NodeWithScore]:
    """Retrieved chunks as LlamaIndex nodes, best first (id, text, title, score kept)."""
    return [
        NodeWithScore(
            node=TextNode(id_=s.id, text=s.text, metadata={"title": s.title}), score=s.score
        )
        for s in sources
    ]


class LlamaIndexRetriever(BaseRetriever):
    """``RAGSystem.retrieve`` as a LlamaIndex retriever (top ``k``; default the system's
    ``config.top_k``)."""

    def __init__(self, rag_system: RAGSystem, k: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rag_system = rag_system
        self.k = k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return source_nodes(self.rag_system.retrieve([query_bundle.query_str], self.k)[0])


class LlamaIndexQueryEngine(CustomQueryEngine):
    """``RAGSystem.query`` as a LlamaIndex query engine: a ``Response`` with the answer and
    its source nodes."""

    rag_system: Any

    def custom_query(self, query_str: str) -> Response:
        answer = self.rag_system.query(query_str)
        return Response(response=answer.answer, source_nodes=source_nodes(answer.sources))
