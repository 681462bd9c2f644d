"""RALT trainer: fine-tunes the generator's LoRA adapter on retrieval-augmented prompts."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fedrag_flower.data import as_rows
from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.losses.scoring import collate
from fedrag_flower.rag.prompts import Example
from fedrag_flower.rag.system import RAGSystem
from fedrag_flower.trainers.result import TrainResult, length_batches, with_overrides


@dataclass
class RALTTrainingArgs:
    """Hyperparameters of RALT.

    Attributes:
        epochs: passes over the training pairs.
        learning_rate: AdamW learning rate of the LoRA parameters.
        batch_size: sequences per optimizer step (each pair gives ``top_k`` sequences).
        top_k: chunks per pair; ``None`` uses the RAG config's ``top_k``.
        max_steps: stop after this many steps (``None``: run all epochs).
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (0 disables).
        seed: seeds the batch order.
        progress: show a progress bar.
    """

    epochs: int = 1
    learning_rate: float = 2e-4
    batch_size: int = 8
    top_k: int | None = None
    max_steps: int | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    progress: bool = True


def ralt_examples(rag_system: RAGSystem, rows: list[dict], top_k: int) -> list[Example]:
    """k examples per pair: prompt_j = template(query, chunk_j), target = response + EOS.

    Retrieval runs once here, batched, for all pairs: the retriever is frozen during RALT.
    """
    sources = rag_system.retrieve([row["query"] for row in rows], top_k)
    return [
        rag_system.prompts.example(row["query"], chunk.text, row["response"])
        for row, chunks in zip(rows, sources)
        for chunk in chunks
    ]


class HuggingFaceTrainerForRALT:
    """Trains the generator's LoRA adapter with ``RALTLoss``; everything else stays frozen.

    >>> trainer = HuggingFaceTrainerForRALT(rag_system, train_dataset)
    >>> print(trainer.train().loss)

    Args:
        rag_system: the system whose generator is trained (in place).
        train_dataset: query/response pairs in any form ``fedrag_flower.data.as_rows``
            accepts (list of column dicts, column dict, row dicts, ``datasets.Dataset``).
        args: ``RALTTrainingArgs``; keyword arguments override single fields.
    """

    def __init__(
        self,
        rag_system: RAGSystem,
        train_dataset,
        args: RALTTrainingArgs | None = None,
        **overrides,
    ) -> None:
        self.rag_system = rag_system
        self.rows = as_rows(train_dataset)
        self.args = with_overrides(args or RALTTrainingArgs(), overrides)
        self.loss_fn = RALTLoss()

    def train(self) -> TrainResult:
        args, generator = self.args, self.rag_system.generator
        start = time.perf_counter()
        rng = random.Random(args.seed)
        params = generator.trainable_parameters()
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
        pad = generator.tokenizer.pad_token_id
        top_k = args.top_k or self.rag_system.config.top_k
        history, tokens, seen = [], 0, 0
        generator.model.train()
        try:
            for epoch in range(args.epochs):
                examples = ralt_examples(self.rag_system, self.rows, top_k)
                batches = list(
                    length_batches([len(e.input_ids) for e in examples], args.batch_size, rng)
                )
                bar = tqdm(
                    batches, desc=f"RALT epoch {epoch + 1}/{args.epochs}", disable=not args.progress
                )
                for batch_indices in bar:
                    batch = collate([examples[i] for i in batch_indices], pad)
                    batch = {k: v.to(generator.device) for k, v in batch.items()}
                    with generator.autocast():
                        loss = self.loss_fn(generator.model, **batch)
                    loss.backward()
                    if args.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    history.append(loss.item())
                    tokens += int(batch["attention_mask"].sum())
                    seen += len(batch_indices)
                    bar.set_postfix(loss=f"{history[-1]:.3f}")
                    if args.max_steps and len(history) >= args.max_steps:
                        break
                if args.max_steps and len(history) >= args.max_steps:
                    break
        finally:
            generator.model.eval()
        seconds = time.perf_counter() - start
        return TrainResult(
            loss=sum(history) / max(len(history), 1),
            steps=len(history),
            examples=seen,
            seconds=seconds,
            tokens=tokens,
            tokens_per_second=tokens / seconds if seconds else 0.0,
            history=history,
        )
