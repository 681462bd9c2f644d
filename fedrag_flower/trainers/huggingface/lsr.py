"""LSR trainer: fine-tunes the retriever's query-side LoRA adapter from LM feedback."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fedrag_flower.data import as_rows
from fedrag_flower.losses.lsr import LSRLoss, lm_target_distribution
from fedrag_flower.losses.scoring import collate, sequence_log_likelihoods, target_log_probs
from fedrag_flower.rag.system import RAGSystem
from fedrag_flower.trainers.result import TrainResult, with_overrides


@dataclass
class LSRTrainingArgs:
    """Hyperparameters of LSR.

    Attributes:
        epochs: passes over the training queries.
        learning_rate: AdamW learning rate of the query adapter.
        batch_size: queries per optimizer step.
        top_k: candidate chunks per query.
        gamma: retrieval temperature in P_R = softmax(cos / gamma).
        beta: LM temperature in Q = softmax(ll / beta).
        length_normalize: ll is the mean log-prob per response token (True) or the sum.
            The mean makes beta comparable across responses of different lengths.
        max_steps: stop after this many steps (``None``: run all epochs).
        max_grad_norm: gradient clipping norm (0 disables).
        seed: seeds the batch order.
        progress: show a progress bar.
    """

    epochs: int = 1
    learning_rate: float = 1e-4
    batch_size: int = 16
    top_k: int = 8
    gamma: float = 0.05
    beta: float = 0.1
    length_normalize: bool = True
    max_steps: int | None = None
    max_grad_norm: float = 1.0
    seed: int = 0
    progress: bool = True


@dataclass
class LSRTargets:
    """Per-query candidates and the LM's distribution over them, fixed for a round.

    Attributes:
        positions: ``[n, k]`` store positions of the candidate chunks.
        chunk_embeddings: ``[n, k, d]`` their (frozen) embeddings.
        log_likelihoods: ``[n, k]`` ll(y | c, x).
        target: ``[n, k]`` Q(c | x, y).
        tokens: tokens scored to compute them.
    """

    positions: torch.Tensor
    chunk_embeddings: torch.Tensor
    log_likelihoods: torch.Tensor
    target: torch.Tensor
    tokens: int


@torch.inference_mode()
def lsr_targets(rag_system: RAGSystem, rows: list[dict], args: LSRTrainingArgs) -> LSRTargets:
    """Retrieve ``top_k`` candidates per query and score the gold response under each.

    The k candidates of a query go through the generator in one batched forward pass. The
    generator is frozen during LSR, so this runs once per ``train()`` and is cached.
    """
    store, generator = rag_system.knowledge_store, rag_system.generator
    queries = [row["query"] for row in rows]
    _, positions = store.search(rag_system.retriever.encode_queries(queries), args.top_k)
    k = positions.shape[1]
    ll = torch.zeros(len(rows), k)
    tokens = 0
    pad = generator.tokenizer.pad_token_id
    bar = tqdm(rows, desc="LSR: LM scores", disable=not args.progress)
    for i, row in enumerate(bar):
        examples = [
            rag_system.prompts.example(row["query"], store.texts[p], row["response"])
            for p in positions[i]
        ]
        batch = {k_: v.to(generator.device) for k_, v in collate(examples, pad).items()}
        with generator.autocast():
            log_probs, batch_rows = target_log_probs(generator.model, **batch)
        ll[i] = sequence_log_likelihoods(
            log_probs.float(), batch_rows, len(examples), args.length_normalize
        ).cpu()
        tokens += int(batch["attention_mask"].sum())
    positions_t = torch.as_tensor(positions, dtype=torch.long)
    embeddings = torch.from_numpy(store.embeddings)[positions_t]
    return LSRTargets(positions_t, embeddings, ll, lm_target_distribution(ll, args.beta), tokens)


class HuggingFaceTrainerForLSR:
    """Trains the retriever's query adapter with ``LSRLoss``; generator and chunk
    embeddings stay frozen, so the knowledge store remains valid.

    >>> trainer = HuggingFaceTrainerForLSR(rag_system, train_dataset)
    >>> print(trainer.train().loss)

    Args:
        rag_system: the system whose retriever is trained (in place).
        train_dataset: query/response pairs in any form ``fedrag_flower.data.as_rows``
            accepts.
        args: ``LSRTrainingArgs``; keyword arguments override single fields.
    """

    def __init__(
        self,
        rag_system: RAGSystem,
        train_dataset,
        args: LSRTrainingArgs | None = None,
        **overrides,
    ) -> None:
        self.rag_system = rag_system
        self.rows = as_rows(train_dataset)
        self.args = with_overrides(args or LSRTrainingArgs(), overrides)
        self.loss_fn = LSRLoss(self.args.gamma)
        self.targets: LSRTargets | None = None

    def train(self) -> TrainResult:
        args, retriever = self.args, self.rag_system.retriever
        start = time.perf_counter()
        self.targets = targets = lsr_targets(self.rag_system, self.rows, args)
        rng = random.Random(args.seed)
        params = retriever.trainable_parameters()
        optimizer = torch.optim.AdamW(params, lr=args.learning_rate)
        queries = [row["query"] for row in self.rows]
        history, seen = [], 0
        for epoch in range(args.epochs):
            order = list(range(len(queries)))
            rng.shuffle(order)
            batches = [
                order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)
            ]
            bar = tqdm(
                batches, desc=f"LSR epoch {epoch + 1}/{args.epochs}", disable=not args.progress
            )
            for batch in bar:
                index = torch.tensor(batch)
                query_embeddings = retriever.query_embeddings([queries[i] for i in batch])
                loss = self.loss_fn(
                    query_embeddings,
                    targets.chunk_embeddings[index].to(query_embeddings.device),
                    targets.target[index].to(query_embeddings.device),
                )
                loss.backward()
                if args.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                history.append(loss.item())
                seen += len(batch)
                bar.set_postfix(loss=f"{history[-1]:.4f}")
                if args.max_steps and len(history) >= args.max_steps:
                    break
            if args.max_steps and len(history) >= args.max_steps:
                break
        seconds = time.perf_counter() - start
        return TrainResult(
            loss=sum(history) / max(len(history), 1),
            steps=len(history),
            examples=seen,
            seconds=seconds,
            tokens=targets.tokens,
            tokens_per_second=targets.tokens / seconds if seconds else 0.0,
            history=history,
        )
