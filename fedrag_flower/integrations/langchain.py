"""A RAG system as a LangChain retriever and runnable.

>>> from fedrag_flower.rag import RAGSystem
>>> from fedrag_flower.integrations.langchain import LangChainRunnable
>>> chain = LangChainRunnable(RAGSystem.from_pretrained("outputs/run-.../final"))
>>> result = chain.invoke("How long does a building permit take?")
>>> result["answer"], [(d.id, d.metadata["score"]) for d in result["sources"]]

Both answer with the system's own retriever, store and generator: the documents are the
chunks ``RAGSystem.retrieve`` returns (``Document.id`` = chunk id; ``title`` and the
cosine ``score`` in the metadata), the answer is ``RAGSystem.query``'s.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable, RunnableConfig
except ImportError as error:  # pragma: no cover - depends on the optional extra
    raise ImportError(
        "the LangChain bridge needs langchain-core: pip install 'fedrag-flower[langchain]'"
    ) from error

from fedrag_flower.rag.base_store import SourceChunk
from fedrag_flower.rag.system import RAGResponse, RAGSystem


def source_documents(sources: list[SourceChunk]) -> list[Document]:
    """Retrieved chunks as LangChain documents, best first (id, text, title, score kept)."""
    return [
        Document(
            id=s.id,
            page_content=s.text,
            metadata={"chunk_id": s.id, "title": s.title, "score": s.score},
        )
        for s in sources
    ]


class LangChainRetriever(BaseRetriever):
    """``RAGSystem.retrieve`` as a LangChain retriever (top ``k``; default the system's
    ``config.top_k``)."""

    rag_system: Any
    k: int | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return source_documents(self.rag_system.retrieve([query], self.k)[0])


class LangChainRunnable(Runnable[str, dict]):
    """``RAGSystem.query`` as a LangChain runnable: a question in, ``{"answer": str,
    "sources": list[Document]}`` out; ``batch`` answers with ``RAGSystem.batch_query``."""

    def __init__(self, rag_system: RAGSystem) -> None:
        self.rag_system = rag_system

    @staticmethod
    def _output(response: RAGResponse) -> dict:
        return {"answer": response.answer, "sources": source_documents(response.sources)}

    def invoke(self, input: str, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return self._output(self.rag_system.query(input))

    def batch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[dict]:
        return [self._output(r) for r in self.rag_system.batch_query(list(inputs))]
