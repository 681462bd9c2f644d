"""The RAG system: retriever + knowledge store + generator + config, saved and loaded whole."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from fedrag_flower.atomic import atomic_directory
from fedrag_flower.models import PACKAGED_GENERATOR, PACKAGED_RETRIEVER
from fedrag_flower.rag.base_store import BaseKnowledgeStore, SourceChunk
from fedrag_flower.rag.generator import Generator
from fedrag_flower.rag.lora import LoraSettings
from fedrag_flower.rag.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    DEFAULT_SYSTEM_PROMPT,
    PromptBuilder,
    join_context,
)
from fedrag_flower.rag.retriever import Retriever
from fedrag_flower.rag.store_backends import load_store, store_class

MANIFEST = "rag_system.json"
_FORMAT_VERSION = 1


@dataclass
class RAGConfig:
    """How the system retrieves and prompts.

    Attributes:
        top_k: chunks retrieved per query; RALT builds one training example per chunk
            (parallel in-context augmentation) and ``query`` returns this many sources.
        context_k: how many of the top chunks go into the prompt when answering (RALT
            trains on one chunk per prompt, so 1 matches training).
        prompt_template: user message with ``{query}`` and ``{context}`` fields.
        system_prompt: system message of the chat template ('' for none).
        max_length: longest prompt + response sequence in tokens; contexts are cut to fit.
        max_new_tokens: longest generated answer.
    """

    top_k: int = 3
    context_k: int = 1
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    max_length: int = 384
    max_new_tokens: int = 128


@dataclass
class RAGResponse:
    """An answer and the chunks it was given, best first."""

    answer: str
    sources: list[SourceChunk] = field(default_factory=list)

    def __str__(self) -> str:
        return self.answer


class RAGSystem:
    """Retrieval-augmented generation over one knowledge store.

    >>> rag = RAGSystem.from_defaults()
    >>> response = rag.query("How long does a building permit take?")
    >>> response.answer, [(s.id, s.score) for s in response.sources]
    """

    def __init__(
        self,
        retriever: Retriever,
        knowledge_store: BaseKnowledgeStore,
        generator: Generator,
        config: RAGConfig | None = None,
    ) -> None:
        self.retriever = retriever
        self.knowledge_store = knowledge_store
        self.generator = generator
        self.config = config or RAGConfig()
        self.prompts = PromptBuilder(
            generator.tokenizer,
            self.config.prompt_template,
            self.config.system_prompt,
            self.config.max_length,
        )

    @classmethod
    def from_defaults(
        cls,
        corpus: list[dict] | None = None,
        config: RAGConfig | None = None,
        generator_model: str = PACKAGED_GENERATOR,
        retriever_model: str = PACKAGED_RETRIEVER,
        context_model: str | None = None,
        generator_lora: LoraSettings | None = None,
        retriever_lora: LoraSettings | None = None,
        store_dir: str | os.PathLike | None = None,
        device: str = "cpu",
        store_backend: str = "faiss",
        store_options: dict | None = None,
        adapt_chunks: bool = False,
    ) -> RAGSystem:
        """Build a system from model names and corpus rows (default: the packaged models
        and the embedded Zaragoza FAQ corpus). With ``store_dir`` the index is saved there
        and reused while the corpus and encoder are unchanged. ``store_backend`` picks the
        knowledge store (``faiss`` exact, ``faiss-hnsw``, ``faiss-ivf``, ``qdrant``; see
        ``fedrag_flower.rag.store_backends``), ``store_options`` its keywords (e.g.
        ``{"url": "http://localhost:6333"}`` for a Qdrant server). ``adapt_chunks``: the
        retriever's adapter encodes the chunks too (``Retriever``)."""
        if corpus is None:
            from fedrag_flower.data import default_corpus

            corpus = default_corpus()
        retriever = Retriever(retriever_model, context_model, retriever_lora, device, adapt_chunks)
        backend = store_class(store_backend)
        if store_dir is not None:
            store = backend.load_or_build(store_dir, corpus, retriever, **(store_options or {}))
        else:
            store = backend.from_corpus(corpus, retriever, **(store_options or {}))
        generator = Generator(generator_model, generator_lora, device)
        return cls(retriever, store, generator, config)

    # -- retrieval and answering -------------------------------------------------------

    def refresh_index(self) -> None:
        """Re-encode the knowledge store's chunks if the retriever adapts its chunk side
        and its adapter has changed since they were encoded (training, a round's global
        adapters); otherwise nothing. Every retrieval calls this first."""
        store, encoding = self.knowledge_store, self.retriever.chunk_encoding
        if store.chunk_encoding == encoding or not len(store):
            return
        embeddings = self.retriever.encode_chunks(
            store.texts, adapted=encoding is not None, show_progress=len(store) > 2000
        )
        store.replace_embeddings(embeddings, encoding)

    def retrieve(self, queries: list[str], k: int | None = None) -> list[list[SourceChunk]]:
        """Top-k chunks for each query, best first."""
        self.refresh_index()
        scores, positions = self.knowledge_store.search(
            self.retriever.encode_queries(queries), k or self.config.top_k
        )
        return [self.knowledge_store.chunks(p, s) for p, s in zip(positions, scores)]

    def prompt_ids(self, query: str, sources: list[SourceChunk]) -> list[int]:
        context = join_context([s.text for s in sources[: self.config.context_k]])
        return self.prompts.prompt_ids(query, context, reserve=self.config.max_new_tokens)

    def batch_query(self, queries: list[str], batch_size: int = 8) -> list[RAGResponse]:
        """Answer many queries; generation is batched ``batch_size`` at a time."""
        all_sources = self.retrieve(queries)
        responses = []
        for start in range(0, len(queries), batch_size):
            chunk = range(start, min(start + batch_size, len(queries)))
            prompts = [self.prompt_ids(queries[i], all_sources[i]) for i in chunk]
            answers = self.generator.generate(prompts, self.config.max_new_tokens)
            responses += [RAGResponse(a, all_sources[i]) for a, i in zip(answers, chunk)]
        return responses

    def query(self, query: str) -> RAGResponse:
        """Answer one query; the response holds the answer and the source chunks."""
        return self.batch_query([query])[0]

    # -- adapters ----------------------------------------------------------------------

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Both adapters' tensors, keys prefixed ``generator.`` and ``retriever.``."""
        state = {f"generator.{k}": v for k, v in self.generator.adapter_state_dict().items()}
        state.update({f"retriever.{k}": v for k, v in self.retriever.adapter_state_dict().items()})
        return state

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load prefixed adapter tensors; a side with no keys in ``state`` is left as is."""
        for prefix, part in (("generator.", self.generator), ("retriever.", self.retriever)):
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if sub:
                part.load_adapter_state_dict(sub)
        unknown = [k for k in state if not k.startswith(("generator.", "retriever."))]
        if unknown:
            raise ValueError(
                f"adapter keys must start with generator. or retriever.: {unknown[:3]}"
            )

    # -- saving and loading ------------------------------------------------------------

    def manifest(self) -> dict:
        return {
            "format_version": _FORMAT_VERSION,
            "generator": {
                "model": self.generator.model_name_or_path,
                "lora": asdict(self.generator.lora),
            },
            "retriever": {
                "model": self.retriever.model_name_or_path,
                "context_model": self.retriever.context_model_name_or_path,
                "lora": asdict(self.retriever.lora),
                "adapt_chunks": self.retriever.adapt_chunks,
            },
            "config": asdict(self.config),
        }

    def save_pretrained(
        self, directory: str | os.PathLike, extra: dict | None = None, include_store: bool = True
    ) -> Path:
        """Write the system to ``directory``: ``generator_adapter/`` and
        ``retriever_adapter/`` in PEFT's format, ``knowledge_store/``, and the manifest
        ``rag_system.json`` (base models, LoRA settings, RAG config, plus ``extra``).

        The folder is assembled beside its destination and renamed into place: an
        interrupted save leaves any earlier system there intact.
        """
        directory = Path(directory)
        with atomic_directory(directory) as tmp:
            self.generator.save_adapter(str(tmp / "generator_adapter"))
            self.retriever.save_adapter(str(tmp / "retriever_adapter"))
            if include_store:
                self.refresh_index()
                self.knowledge_store.save(tmp / "knowledge_store")
            manifest = self.manifest() | {"extra": extra or {}}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return directory

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        knowledge_store: BaseKnowledgeStore | None = None,
        corpus: list[dict] | None = None,
        device: str = "cpu",
        store_backend: str | None = None,
        store_options: dict | None = None,
    ) -> RAGSystem:
        """Load a system written by ``save_pretrained``. Pass ``knowledge_store``, or
        ``corpus`` rows to index, to answer from another corpus with the same fine-tuned
        models (needed when the system was saved without its store). The saved store loads
        into ``store_backend`` (default: the backend it was saved from) with
        ``store_options``."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(
                f"{directory} is not a saved RAG system: {MANIFEST} is missing "
                "(point at the folder a training run printed)"
            )
        try:
            manifest = json.loads(manifest_path.read_text())
            retriever_spec, generator_spec = manifest["retriever"], manifest["generator"]
            retriever_lora = LoraSettings(**retriever_spec["lora"])
            generator_lora = LoraSettings(**generator_spec["lora"])
            config = RAGConfig(**manifest["config"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"{manifest_path} is not a fedrag-flower system manifest "
                f"({type(error).__name__}: {error}); was it written by another tool or damaged?"
            ) from None
        retriever = Retriever(
            retriever_spec["model"],
            retriever_spec["context_model"],
            retriever_lora,
            device,
            bool(retriever_spec.get("adapt_chunks", False)),
        )
        generator = Generator(generator_spec["model"], generator_lora, device)
        for name, part in (("retriever_adapter", retriever), ("generator_adapter", generator)):
            try:
                part.load_adapter(str(directory / name))
            except Exception as error:  # noqa: BLE001 - any unreadable adapter: name it
                raise ValueError(
                    f"{directory / name} cannot be loaded ({type(error).__name__}: {error}); "
                    "the saved system is damaged or its adapter does not fit its base model"
                ) from None
        if knowledge_store is None and corpus is not None:
            knowledge_store = store_class(store_backend or "faiss").from_corpus(
                corpus, retriever, **(store_options or {})
            )
        elif knowledge_store is None:
            if not (directory / "knowledge_store").exists():
                raise ValueError(
                    f"{directory} was saved without a knowledge store: give a corpus to "
                    "answer from (--corpus FILE on the command line)"
                )
            knowledge_store = load_store(
                directory / "knowledge_store", store_backend, **(store_options or {})
            )
            # saved by save_pretrained, encoded with the adapter saved beside it
            knowledge_store.chunk_encoding = retriever.chunk_encoding
        return cls(retriever, knowledge_store, generator, config)
