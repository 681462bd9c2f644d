"""LSR trainer: fine-tunes the retriever's query-side LoRA adapter from LM feedback."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from fedrag_flower.losses.lsr import LSRLoss, lm_target_distribution
from fedrag_flower.losses.scoring import collate, sequence_log_likelihoods, target_log_probs
from fedrag_flower.rag.base_store import BaseKnowledgeStore
from fedrag_flower.rag.system import RAGSystem
from fedrag_flower.trainers.args import TrainingArgs
from fedrag_flower.trainers.loop import Step, train_loop
from fedrag_flower.trainers.result import TrainResult
from fedrag_flower.trainers.trainer import Trainer


@dataclass
class LSRTrainingArgs(TrainingArgs):
    """Hyperparameters of LSR: those of ``TrainingArgs`` (``batch_size`` counts queries),
    and

    Attributes:
        top_k: candidate chunks per query.
        gamma: retrieval temperature in P_R = softmax(cos / gamma).
        beta: LM temperature in Q = softmax(ll / beta).
        length_normalize: ll is the mean log-prob per response token (True) or the sum.
            The mean makes beta comparable across responses of different lengths.
        score_batch_size: sequences per forward pass when scoring candidates with the LM.
        gold_candidate: (not RA-DIT's; a changed objective) a query with gold ids none of
            whose chunks is among its ``top_k`` retrieved candidates gets its first gold
            chunk in place of the last candidate, so the LM target can point at it: the
            gold ids supervise which chunks are scored, the LM still sets the target.
            Queries without gold ids (or whose gold ids are not in the store) keep their
            retrieved candidates.
    """

    learning_rate: float = 1e-4
    batch_size: int = 16
    top_k: int = 8
    gamma: float = 0.05
    beta: float = 0.1
    length_normalize: bool = True
    score_batch_size: int = 16
    gold_candidate: bool = False


@dataclass
class LSRTargets:
    """Per-query candidates and the LM's distribution over them, fixed for a round.

    Attributes:
        positions: ``[n, k]`` store positions of the candidate chunks.
        valid: ``[n, k]`` False where the index could not fill a slot (an approximate
            index may return fewer than k): such a slot has target 0 and no P_R mass.
        chunk_embeddings: ``[n, k, d]`` their (frozen) embeddings.
        log_likelihoods: ``[n, k]`` ll(y | c, x).
        target: ``[n, k]`` Q(c | x, y).
        tokens: tokens scored to compute them.
    """

    positions: torch.Tensor
    valid: torch.Tensor
    chunk_embeddings: torch.Tensor
    log_likelihoods: torch.Tensor
    target: torch.Tensor
    tokens: int


@torch.inference_mode()
def lsr_targets(rag_system: RAGSystem, rows: list[dict], args: LSRTrainingArgs) -> LSRTargets:
    """Retrieve ``top_k`` candidates per query and score the gold response under each.

    All n x k (query, candidate) sequences are sorted by length and scored
    ``score_batch_size`` at a time, so a batch holds little padding; each sequence's
    log-likelihood does not depend on what shares its batch. The generator is frozen during
    LSR, so this runs once per ``train()`` and is cached.
    """
    rag_system.refresh_index()
    store, generator = rag_system.knowledge_store, rag_system.generator
    queries = [row["query"] for row in rows]
    _, positions = store.search(rag_system.retriever.encode_queries(queries), args.top_k)
    if args.gold_candidate:
        positions = with_gold_candidates(positions, rows, store)
    n, k = positions.shape
    valid = torch.as_tensor(positions >= 0)
    slots = valid.flatten().nonzero()[:, 0].tolist()  # the (query, candidate) pairs scored
    examples = {
        slot: rag_system.prompts.example(
            rows[slot // k]["query"],
            store.texts[positions[slot // k, slot % k]],
            rows[slot // k]["response"],
        )
        for slot in slots
    }
    order = sorted(slots, key=lambda i: len(examples[i].input_ids))
    ll = torch.full((n * k,), float("-inf"))
    tokens = 0
    pad = generator.tokenizer.pad_token_id
    starts = range(0, len(order), args.score_batch_size)
    for start in tqdm(starts, desc="LSR: LM scores", disable=not args.progress):
        index = order[start : start + args.score_batch_size]
        batch = collate([examples[i] for i in index], pad)
        batch = {k_: v.to(generator.device) for k_, v in batch.items()}
        with generator.autocast():
            log_probs, batch_rows = target_log_probs(generator.model, **batch)
        ll[index] = sequence_log_likelihoods(
            log_probs.float(), batch_rows, len(index), args.length_normalize
        ).cpu()
        tokens += int(batch["attention_mask"].sum())
    ll = ll.view(n, k)
    positions_t = torch.as_tensor(positions, dtype=torch.long).clamp(min=0)
    embeddings = torch.from_numpy(store.embeddings)[positions_t]
    target = lm_target_distribution(ll, args.beta).nan_to_num(0.0)  # a row with no candidate
    return LSRTargets(positions_t, valid, embeddings, ll, target, tokens)


def with_gold_candidates(
    positions: np.ndarray, rows: list[dict], store: BaseKnowledgeStore
) -> np.ndarray:
    """``positions`` ``[n, k]`` with each row's first gold chunk (by ``gold_ids``, if in
    ``store``) put in place of its last candidate where no gold chunk is a candidate yet."""
    positions = positions.copy()
    for candidates, row in zip(positions, rows):
        gold = [store.position(g) for g in row.get("gold_ids") or [] if g in store]
        if gold and not set(gold) & set(candidates.tolist()):
            candidates[-1] = gold[0]
    return positions


class HuggingFaceTrainerForLSR(Trainer):
    """Trains the retriever's query adapter with ``LSRLoss``; generator and chunk
    embeddings stay frozen, so the knowledge store remains valid. With a retriever that
    adapts its chunk side (``Retriever(adapt_chunks=True)``) each step encodes the batch's
    candidate chunks through the adapter too and trains both sides; the store is then
    re-encoded at its next retrieval (``RAGSystem.refresh_index``).

    >>> trainer = HuggingFaceTrainerForLSR(rag_system, train_dataset)
    >>> print(trainer.train().loss)

    Args:
        rag_system: the system whose retriever is trained (in place).
        train_dataset: query/response pairs in any form ``fedrag_flower.data.as_rows``
            accepts.
        args: ``LSRTrainingArgs``; keyword arguments override single fields.
    """

    args_class = LSRTrainingArgs
    rag_system: RAGSystem
    args: LSRTrainingArgs

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.loss_fn = LSRLoss(self.args.gamma)
        self.targets: LSRTargets | None = None

    def train(self) -> TrainResult:
        started = time.perf_counter()
        args, retriever = self.args, self.rag_system.retriever
        self.rag_system.generator.prepare_for_training()  # bf16 weights where they pay off
        self.targets = targets = lsr_targets(self.rag_system, self.rows, args)
        self.loss_fn.train_chunks = retriever.adapt_chunks
        queries = [row["query"] for row in self.rows]

        usable = targets.valid.any(1).nonzero()[:, 0].tolist()
        if not usable:
            raise ValueError("LSR: the knowledge store returned no candidate chunk for any query")

        def epoch_batches(rng: random.Random) -> list[list[list[int]]]:
            order = list(usable)
            rng.shuffle(order)
            size = args.batch_size
            return [[order[i : i + size]] for i in range(0, len(order), size)]

        def chunk_embeddings(index: torch.Tensor) -> torch.Tensor:
            if not retriever.adapt_chunks:
                return targets.chunk_embeddings[index]
            # through the adapter: each distinct candidate of the batch encoded once
            positions = targets.positions[index]
            distinct, inverse = torch.unique(positions, return_inverse=True)
            texts = self.rag_system.knowledge_store.texts
            encoded = retriever.chunk_embeddings([texts[p] for p in distinct.tolist()])
            return encoded[inverse]

        def step(batch: list[int]) -> Step:
            index = torch.tensor(batch)
            with retriever.autocast():  # the encoder's passes; the loss below in fp32
                query_embeddings = retriever.query_embeddings([queries[i] for i in batch])
                candidates = chunk_embeddings(index)
            query_embeddings = query_embeddings.float()
            loss = self.loss_fn(
                query_embeddings,
                candidates.float().to(query_embeddings.device),
                targets.target[index].to(query_embeddings.device),
                targets.valid[index].to(query_embeddings.device),
            )
            return Step(loss, len(batch))

        try:
            return train_loop(
                retriever.query_model,
                retriever.trainable_parameters(),
                args,
                epoch_batches,
                step,
                "LSR",
                started,
                tokens=targets.tokens,
            )
        finally:
            retriever.adapter_changed()
