"""The retriever: a sentence-transformers model with a LoRA adapter on the query path."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedrag_flower.models import PACKAGED_RETRIEVER, resolve_retriever
from fedrag_flower.rag.encoder import in_length_groups, load_encoder
from fedrag_flower.rag.lora import (
    LoraSettings,
    adapter_state_dict,
    attach_lora,
    trainable_parameters,
)
from fedrag_flower.rag.lora import load_adapter_state_dict as _load_adapter
from fedrag_flower.rag.precision import autocast_for, bf16_by_default

_BERT_TARGETS = ["query", "value"]


class Retriever:
    """Encodes queries and chunks into unit vectors; their dot product is the cosine score.

    With one shared encoder (``context_model_name_or_path=None``, e.g. MiniLM) the LoRA
    adapter is switched on for queries and off for chunks, so chunk embeddings stay those of
    the frozen base model and a built index never needs re-encoding. With a dual encoder the
    context encoder has no adapter at all.

    With ``adapt_chunks`` (shared encoder only) the adapter encodes the chunks too, as
    REPLUG trains its retriever on both sides and re-indexes (Shi et al., 2023): LSR then
    trains it through both the query and the candidates' embeddings, and a store's
    embeddings are valid only for the adapter they were encoded with.
    ``RAGSystem.refresh_index`` re-encodes a store when ``chunk_encoding`` has changed (a
    few seconds for the default 503 chunks on 2 cores; about the time of building the
    index from scratch for a large corpus).

    Args:
        model_name_or_path: query encoder (any sentence-transformers id or path).
        context_model_name_or_path: separate context encoder, or ``None`` to share.
        lora: LoRA settings for the query path, or ``None`` for no adapter.
        device: torch device.
        adapt_chunks: the adapter encodes chunks too (see above).
        bf16: run the training passes (``autocast()``) in bf16 autocast; ``None`` decides
            as the generator does (CUDA, or a CPU with native bf16). Embeddings for the
            index and for retrieval are always computed in fp32.
    """

    def __init__(
        self,
        model_name_or_path: str = PACKAGED_RETRIEVER,
        context_model_name_or_path: str | None = None,
        lora: LoraSettings | None = None,
        device: str = "cpu",
        adapt_chunks: bool = False,
        bf16: bool | None = None,
    ) -> None:
        if adapt_chunks and context_model_name_or_path:
            raise ValueError(
                "adapt_chunks needs one shared encoder: a dual encoder's context model "
                f"({context_model_name_or_path}) has no adapter to adapt"
            )
        self.adapt_chunks = adapt_chunks
        self._adapter_version = 0  # bumped whenever the adapter's weights may have changed
        self.model_name_or_path = model_name_or_path
        self.context_model_name_or_path = context_model_name_or_path
        self.lora = lora if lora is not None else LoraSettings(r=8, alpha=16, dropout=0.0)
        self.device = device
        self.bf16 = bf16_by_default(device) if bf16 is None else bf16
        self.query_model = load_encoder(resolve_retriever(model_name_or_path), device)
        self.context_model = (
            load_encoder(resolve_retriever(context_model_name_or_path), device)
            if context_model_name_or_path
            else None
        )
        # PEFT injects the LoRA layers into the encoder in place; keeping the PeftModel in
        # the backbone's slot also gives us its disable_adapter() for the chunk side.
        self.peft_model = attach_lora(self.query_model.backbone, self.lora, _BERT_TARGETS)
        self.query_model.replace_backbone(self.peft_model)
        for module in (self.query_model, self.context_model):
            if module is not None:
                module.eval()

    @property
    def dim(self) -> int:
        return self.query_model.dim

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return trainable_parameters(self.peft_model, self.lora)

    def autocast(self):
        """The precision of the training passes (``query_embeddings``,
        ``chunk_embeddings``): bf16 autocast, or fp32 where bf16 is off."""
        return autocast_for(self.bf16, self.device)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        """Unit-norm query embeddings (adapter on), as float32 numpy, without gradient (in
        groups of similar length, as ``query_embeddings``)."""
        with torch.inference_mode():
            return self.query_embeddings(texts).float().cpu().numpy()

    def query_embeddings(self, texts: list[str], group_rows: int = 12) -> torch.Tensor:
        """Unit-norm query embeddings as a tensor that carries gradient into the adapter.

        The texts run in groups of similar length (by characters, at most ``group_rows``
        each) and come back in their order, so a batch of mixed lengths pads less: an LSR
        step's 36 candidate chunks (57 tokens on average, up to 117) ran forward and
        backward 1.25x faster than as one batch padded to the longest, the same embeddings
        up to rounding."""
        if not texts:
            return torch.zeros((0, self.dim), device=self.device)
        embeddings = in_length_groups(texts, group_rows, self.query_model.embed)
        return F.normalize(embeddings, dim=-1)

    @property
    def chunk_encoding(self) -> tuple[int, int] | None:
        """What ``encode_chunks(adapted=True)`` encodes with now: ``None`` for the frozen
        base encoder (no ``adapt_chunks``, or an adapter not changed since it was
        initialised: LoRA starts as the identity), else a key that changes with every
        change of the adapter."""
        if not self.adapt_chunks or self._adapter_version == 0:
            return None
        return (id(self), self._adapter_version)

    def adapter_changed(self) -> None:
        """Record that the adapter's weights changed (training, loading)."""
        self._adapter_version += 1

    def chunk_embeddings(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm chunk embeddings through the adapter, carrying gradient into it
        (``adapt_chunks`` only)."""
        if not self.adapt_chunks:
            raise ValueError("chunk embeddings carry no gradient unless adapt_chunks is set")
        return self.query_embeddings(texts)

    def encode_chunks(
        self,
        texts: list[str],
        batch_size: int = 64,
        show_progress: bool = False,
        adapted: bool = False,
    ) -> np.ndarray:
        """Unit-norm chunk embeddings, float32 numpy: from the frozen context side, or
        with ``adapted`` (and ``adapt_chunks``) through the adapter."""
        if self.context_model is not None:
            return self.context_model.encode(texts, batch_size, show_progress)
        if adapted and self.adapt_chunks:
            return self.query_model.encode(texts, batch_size, show_progress)
        with self.peft_model.disable_adapter():
            return self.query_model.encode(texts, batch_size, show_progress)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return adapter_state_dict(self.peft_model)

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _load_adapter(self.peft_model, state)
        self.adapter_changed()

    def save_adapter(self, directory: str) -> None:
        """Save the query adapter in PEFT's format (``adapter_config.json`` + safetensors)."""
        self.peft_model.save_pretrained(directory)

    def load_adapter(self, directory: str) -> None:
        from peft.utils import load_peft_weights

        self.load_adapter_state_dict(load_peft_weights(directory, device=self.device))
