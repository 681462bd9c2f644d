"""The server's system: base models with the seeded initial adapters, and their sizes.

The rest of the server lives beside this: ``strategies`` (which Flower strategy),
``adapter_strategy`` (validation, site records, one-side rule), ``rounds`` (the loop),
``run_folder`` (checkpoints, resume, the final system), ``reporting`` (metrics.json/png),
``privacy`` (DP wrappers and accountant).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord

from fedrag_flower.federation.adapters import adapter_arrays
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.rag.knowledge_store import KnowledgeStore
from fedrag_flower.rag.system import RAGSystem


def server_rag_system(settings: FederationSettings) -> RAGSystem:
    """The system the server saves: base models with the (seeded, hence identical on every
    site) initial adapters, packaged with ``server_corpus`` as its knowledge store."""
    from fedrag_flower.data import default_corpus, load_corpus
    from fedrag_flower.rag.generator import Generator
    from fedrag_flower.rag.retriever import Retriever

    retriever = Retriever(
        settings.retriever_model,
        None,
        settings.retriever_lora(),
        adapt_chunks=settings.adapt_chunks,
    )
    if settings.server_corpus == "none":
        store = KnowledgeStore([], [], np.zeros((0, retriever.dim), "float32"))
    else:
        corpus = (
            default_corpus(settings.default_data)
            if settings.server_corpus == "default"
            else load_corpus(settings.server_corpus)
        )
        store = KnowledgeStore.from_corpus(corpus, retriever)
    generator = Generator(settings.generator_model, settings.generator_lora())
    return RAGSystem(retriever, store, generator, settings.rag_config())


def model_sizes(rag_system: RAGSystem) -> dict[str, int]:
    """Bytes of the full generator and retriever weights, and of their adapters: what a
    site would send per round without LoRA, next to what it does send."""

    def nbytes(params) -> int:
        return sum(p.numel() * p.element_size() for p in params)

    generator, retriever = rag_system.generator.model, rag_system.retriever.query_model
    return {
        "generator_full": nbytes(generator.parameters()),
        "retriever_full": nbytes(retriever.parameters()),
        "generator_adapter": nbytes(rag_system.generator.trainable_parameters()),
        "retriever_adapter": nbytes(rag_system.retriever.trainable_parameters()),
    }


def initial_arrays(rag_system: RAGSystem) -> ArrayRecord:
    return adapter_arrays(rag_system.adapter_state_dict())
