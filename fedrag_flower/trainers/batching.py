"""Batches of similar-length examples, so little of each step is padding."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


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
