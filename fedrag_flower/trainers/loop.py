"""The training loop both trainers run: AdamW on one adapter, clipping, ``max_steps``.

Each trainer brings what is its own (RALT: its retrieval-augmented examples; LSR: its
cached LM targets) as two functions: the batches of an epoch, and the loss of a
micro-batch. A batch is a list of micro-batches whose losses add up to the batch's loss;
their gradients accumulate before the one optimizer step, so the step is the same as on
the whole batch at once while the activations held at a time shrink with the micro-batch.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from fedrag_flower.trainers.args import TrainingArgs
from fedrag_flower.trainers.result import TrainResult


@dataclass
class Step:
    """What one micro-batch gives the loop: its share of the batch loss (with gradient),
    and what to count."""

    loss: torch.Tensor
    examples: int
    tokens: int = 0


def train_loop(
    module: torch.nn.Module,
    params: list[torch.nn.Parameter],
    args: TrainingArgs,
    epoch_batches: Callable[[random.Random], Sequence[Any]],
    step: Callable[[Any], Step],
    name: str,
    started: float,
    tokens: int = 0,
) -> TrainResult:
    """Run ``args.epochs`` epochs (or ``args.max_steps`` steps) of AdamW on ``params``.

    ``module`` is in train mode during the loop (LoRA and base dropout active) and back in
    eval mode after it, also on error. ``epoch_batches(rng)`` gives an epoch's batches,
    each a list of micro-batches; ``step(micro_batch)`` its share of the batch loss.
    ``started`` (a ``time.perf_counter()`` value) and ``tokens`` let the result count the
    trainer's own preparation (retrieval, LM scoring).
    """
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    rng = random.Random(args.seed)
    history: list[float] = []
    examples = 0
    module.train()
    try:
        for epoch in range(args.epochs):
            bar = tqdm(
                epoch_batches(rng),
                desc=f"{name} epoch {epoch + 1}/{args.epochs}",
                disable=not args.progress,
            )
            for batch in bar:
                loss = 0.0
                for micro_batch in batch:
                    out = step(micro_batch)
                    out.loss.backward()
                    loss += out.loss.item()
                    examples += out.examples
                    tokens += out.tokens
                if args.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                history.append(loss)
                bar.set_postfix(loss=f"{loss:.4f}")
                if args.max_steps and len(history) >= args.max_steps:
                    return _result(history, examples, tokens, started)
    finally:
        module.eval()
    return _result(history, examples, tokens, started)


def _result(history: list[float], examples: int, tokens: int, started: float) -> TrainResult:
    seconds = time.perf_counter() - started
    return TrainResult(
        loss=sum(history) / max(len(history), 1),
        steps=len(history),
        examples=examples,
        seconds=seconds,
        tokens=tokens,
        tokens_per_second=tokens / seconds if seconds else 0.0,
        history=history,
    )
