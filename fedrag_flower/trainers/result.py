"""What a trainer's ``train()`` returns, and the small pieces both trainers share."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields


@dataclass
class TrainResult:
    """Summary of one ``train()`` call.

    Attributes:
        loss: mean training loss over all steps (RALT: NLL per response token; LSR: KL).
        steps: optimizer steps taken.
        examples: training sequences (RALT) or queries (LSR) seen, epochs included.
        seconds: wall time of the call, retrieval and caching included.
        tokens: non-padding tokens fed to the model (RALT) or scored (LSR).
        tokens_per_second: ``tokens / seconds``.
        history: loss of every step.
    """

    loss: float
    steps: int
    examples: int
    seconds: float
    tokens: int = 0
    tokens_per_second: float = 0.0
    history: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Scalars only (no history), for logs and Flower metric records."""
        return {k: float(v) for k, v in asdict(self).items() if k != "history"}


def length_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random
) -> Iterator[list[int]]:
    """Batches of indices with similar lengths (little padding), in random order.

    Indices are shuffled, sorted by length within windows of 50 batches, cut into batches,
    and the batches shuffled: similar lengths share a batch, yet the order varies by epoch.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        block = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    yield from batches


def with_overrides(args, overrides: dict):
    """Set single fields of a training-args dataclass from keyword arguments."""
    names = {f.name for f in fields(args)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown training arguments {sorted(unknown)}; known: {sorted(names)}")
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
