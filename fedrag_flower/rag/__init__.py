"""RAG pieces: retriever, knowledge store, generator, prompts, and the system that joins them."""

from fedrag_flower.rag.approximate_store import FaissHNSWKnowledgeStore, FaissIVFKnowledgeStore
from fedrag_flower.rag.base_store import BaseKnowledgeStore
from fedrag_flower.rag.generator import Generator
from fedrag_flower.rag.knowledge_store import KnowledgeStore, SourceChunk
from fedrag_flower.rag.lora import LoraSettings
from fedrag_flower.rag.qdrant_store import QdrantKnowledgeStore
from fedrag_flower.rag.retriever import Retriever
from fedrag_flower.rag.system import RAGConfig, RAGResponse, RAGSystem

__all__ = [
    "BaseKnowledgeStore",
    "FaissHNSWKnowledgeStore",
    "FaissIVFKnowledgeStore",
    "Generator",
    "KnowledgeStore",
    "LoraSettings",
    "QdrantKnowledgeStore",
    "RAGConfig",
    "RAGResponse",
    "RAGSystem",
    "Retriever",
    "SourceChunk",
]
