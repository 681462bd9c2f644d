"""fedrag-flower: federated fine-tuning of retrieval-augmented generation on Flower.

The heavy pieces (torch, transformers) load on first use, so ``fedrag_flower.data`` and the
command line's file checks stay quick.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "RAGSystem": "fedrag_flower.rag",
    "RAGConfig": "fedrag_flower.rag",
    "RAGResponse": "fedrag_flower.rag",
    "LoraSettings": "fedrag_flower.rag",
    "KnowledgeStore": "fedrag_flower.rag",
    "Retriever": "fedrag_flower.rag",
    "Generator": "fedrag_flower.rag",
    "HuggingFaceTrainerForRALT": "fedrag_flower.trainers.huggingface.ralt",
    "HuggingFaceTrainerForLSR": "fedrag_flower.trainers.huggingface.lsr",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedrag_flower' has no attribute {name!r}")
