"""RALT trainer: fine-tunes the generator's LoRA adapter on retrieval-augmented prompts."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.losses.scoring import collate
from fedrag_flower.rag.prompts import IGNORE_INDEX, Example, join_context
from fedrag_flower.rag.system import RAGSystem
from fedrag_flower.trainers.args import TrainingArgs
from fedrag_flower.trainers.batching import length_batches
from fedrag_flower.trainers.loop import Step, train_loop
from fedrag_flower.trainers.result import TrainResult
from fedrag_flower.trainers.trainer import Trainer


@dataclass
class RALTTrainingArgs(TrainingArgs):
    """Hyperparameters of RALT: those of ``TrainingArgs`` (``batch_size`` counts examples:
    a pair gives ``top_k`` of them when ``context`` is parallel, one when joined), and

    Attributes:
        top_k: chunks per pair; ``None`` uses the RAG config's ``top_k``.
        context: how the chunks of a pair become training examples. ``"parallel"`` is
            RA-DIT's: ``top_k`` examples, one chunk in each prompt. ``"joined"`` (not
            RA-DIT's; a changed objective) is one example per pair whose prompt holds all
            ``top_k`` chunks, best first: the prompt a system with ``context_k = top_k``
            answers with. See ``ralt_examples``.
        max_tokens_per_pass: a batch goes through the model in micro-batches of at most
            this many (padded) tokens, gradients accumulated: the same step, with peak
            activation memory bounded (8 x 224 tokens in one pass held 3.5 GB).
        supported_only: (not RA-DIT's; a changed objective) train only on the pairs whose
            retrieved chunks hold one of their ``gold_ids``; pairs without gold ids always
            train. RA-DIT trains every pair, also after chunks that do not hold its answer,
            which teaches the generator to write an answer its context does not support.
    """

    top_k: int | None = None
    context: str = "parallel"
    max_tokens_per_pass: int = 1024
    supported_only: bool = False


RALT_CONTEXTS = ("parallel", "joined")


def ralt_examples(
    rag_system: RAGSystem,
    rows: list[dict],
    top_k: int,
    context: str = "parallel",
    supported_only: bool = False,
) -> list[Example]:
    """The training examples of ``rows``; the target is always response + EOS.

    ``parallel`` (RA-DIT): k examples per pair, prompt_j = template(query, chunk_j).
    ``joined``: one example per pair, prompt = template(query, chunk_1 + ... + chunk_k).
    With parallel examples, every pair teaches its answer after each of its k chunks, k - 1
    of which usually do not hold it; joined, the answer follows a context that holds it
    whenever any of the k does, and the model learns to find it there. On held-out training
    questions of the default data (one epoch on 135 pairs, top 3) joined training gave
    F1 0.671 / EM 0.580 against 0.451 / 0.284 for parallel, for 44 % fewer tokens.

    ``supported_only`` drops the pairs that have gold ids none of whose chunks were
    retrieved (see ``RALTTrainingArgs``).

    Retrieval runs once here, batched, for all pairs: the retriever is frozen during RALT.
    """
    if context not in RALT_CONTEXTS:
        raise ValueError(f"RALT context must be one of {RALT_CONTEXTS}, got {context!r}")
    sources = rag_system.retrieve([row["query"] for row in rows], top_k)
    if supported_only:
        kept = [
            (row, chunks)
            for row, chunks in zip(rows, sources)
            if not row.get("gold_ids") or set(row["gold_ids"]) & {c.id for c in chunks}
        ]
        rows, sources = [row for row, _ in kept], [chunks for _, chunks in kept]
    if context == "joined":
        return [
            rag_system.prompts.example(
                row["query"], join_context([c.text for c in chunks]), row["response"]
            )
            for row, chunks in zip(rows, sources)
        ]
    return [
        rag_system.prompts.example(row["query"], chunk.text, row["response"])
        for row, chunks in zip(rows, sources)
        for chunk in chunks
    ]


class HuggingFaceTrainerForRALT(Trainer):
    """Trains the generator's LoRA adapter with ``RALTLoss``; everything else stays frozen.

    >>> trainer = HuggingFaceTrainerForRALT(rag_system, train_dataset)
    >>> print(trainer.train().loss)

    Args:
        rag_system: the system whose generator is trained (in place).
        train_dataset: query/response pairs in any form ``fedrag_flower.data.as_rows``
            accepts (list of column dicts, column dict, row dicts, ``datasets.Dataset``).
        args: ``RALTTrainingArgs``; keyword arguments override single fields.
    """

    args_class = RALTTrainingArgs
    rag_system: RAGSystem
    args: RALTTrainingArgs
    loss_fn = RALTLoss()

    def train(self) -> TrainResult:
        started = time.perf_counter()
        args, generator = self.args, self.rag_system.generator
        self.rag_system.generator.prepare_for_training()  # bf16 weights where they pay off
        # The retriever is frozen during RALT: retrieve and tokenize once for all epochs.
        examples = ralt_examples(
            self.rag_system,
            self.rows,
            args.top_k or self.rag_system.config.top_k,
            args.context,
            args.supported_only,
        )
        lengths = [len(e.input_ids) for e in examples]
        pad = generator.tokenizer.pad_token_id

        targets = [sum(label != IGNORE_INDEX for label in e.labels[1:]) for e in examples]

        def epoch_batches(rng: random.Random) -> list[list[tuple[list[int], int]]]:
            return [
                [(micro, sum(targets[i] for i in batch)) for micro in micro_batches(batch)]
                for batch in length_batches(lengths, args.batch_size, rng)
            ]

        def micro_batches(batch: list[int]) -> list[list[int]]:
            # batches are length-sorted: the padded width is the longest member's length
            batch = sorted(batch, key=lambda i: lengths[i])
            per_pass = max(args.max_tokens_per_pass // lengths[batch[-1]], 1)
            return [batch[i : i + per_pass] for i in range(0, len(batch), per_pass)]

        def step(micro_batch: tuple[list[int], int]) -> Step:
            indices, batch_targets = micro_batch
            batch = collate([examples[i] for i in indices], pad)
            batch = {k: v.to(generator.device) for k, v in batch.items()}
            with generator.autocast():
                loss = self.loss_fn(generator.model, **batch, num_target_tokens=batch_targets)
            return Step(loss, len(indices), int(batch["attention_mask"].sum()))

        return train_loop(
            generator.model,
            generator.trainable_parameters(),
            args,
            epoch_batches,
            step,
            "RALT",
            started,
        )
