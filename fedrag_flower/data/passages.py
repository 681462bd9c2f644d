"""The harder variant of the default data: FAQ answers joined into passages.

In the plain FAQ every chunk is exactly one question's answer, so answering is mostly
retrieving the right chunk and copying it. Here the answers of each category are shuffled
(seeded, so the passages are always the same) and joined into passages of 3-5 answers; a
question's gold id is the passage that holds its answer, and its response is still its
own answer, which the generator must now pick out of the passage. Categories keep their
answers, so partitioning by category is unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

PASSAGE_SEED = 0
"""Seeds the order of answers within each category before they are cut into passages."""

MIN_ANSWERS, MAX_ANSWERS = 3, 5
"""Answers per passage (a category with fewer than 3 answers is one passage)."""


def passage_sizes(n: int) -> list[int]:
    """How ``n`` answers of a category are cut: p passages of near-equal size, p the
    multiple of ~4 answers that keeps every size within [3, 5] (p = round(n / 4), clamped
    to [ceil(n / 5), floor(n / 3)]); sizes differ by at most one, larger first."""
    if n <= MAX_ANSWERS:
        return [n] if n else []
    p = min(max(round(n / 4), math.ceil(n / MAX_ANSWERS)), n // MIN_ANSWERS)
    return [n // p + (1 if i < n % p else 0) for i in range(p)]


def passage_of(rows: Sequence[Mapping], seed: int = PASSAGE_SEED) -> dict[str, tuple[str, int]]:
    """For each FAQ row id: ``(passage id, position of its answer in the passage)``.

    Passage ids are ``"<category>#<k>"`` (k from 1, categories in file order of first
    appearance); within a category the row order is shuffled with
    ``random.Random(f"{seed}:{category}")``.
    """
    by_category: dict[str, list[str]] = {}
    for row in rows:
        by_category.setdefault(row["category"], []).append(row["id"])
    placement = {}
    for category, ids in by_category.items():
        ids = list(ids)
        random.Random(f"{seed}:{category}").shuffle(ids)
        start = 0
        for k, size in enumerate(passage_sizes(len(ids)), start=1):
            for position, row_id in enumerate(ids[start : start + size]):
                placement[row_id] = (f"{category}#{k}", position)
            start += size
    return placement


def passage_corpus(rows: Sequence[Mapping], seed: int = PASSAGE_SEED) -> list[dict]:
    """The passages as corpus rows ``{"id", "text", "title": category}``, answers joined by
    a blank line, passages in order of first appearance."""
    placement = passage_of(rows, seed)
    answers: dict[str, list[tuple[int, str]]] = {}
    titles: dict[str, str] = {}
    for row in rows:
        passage, position = placement[row["id"]]
        answers.setdefault(passage, []).append((position, row["a"]))
        titles[passage] = row["category"]
    return [
        {"id": passage, "text": "\n\n".join(a for _, a in sorted(parts)), "title": titles[passage]}
        for passage, parts in answers.items()
    ]
