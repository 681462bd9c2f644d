"""RAG pieces: retriever, knowledge store, generator, prompts, and the system that joins them."""

from fedrag_flower.rag.generator import Generator
from fedrag_flower.rag.knowledge_store import KnowledgeStore, SourceChunk
from fedrag_flower.rag.lora import LoraSettings
from fedrag_flower.rag.retriever import Retriever
from fedrag_flower.rag.system import RAGConfig, RAGResponse, RAGSystem

__all__ = [
    "Generator",
    "KnowledgeStore",
    "LoraSettings",
    "RAGConfig",
    "RAGResponse",
    "RAGSystem",
    "Retriever",
    "SourceChunk",
]
