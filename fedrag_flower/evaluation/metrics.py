"""Text and retrieval metrics: pure Python, no model needed.

Answer metrics follow the SQuAD evaluation script (Rajpurkar et al., 2016): both strings are
normalised with :func:`normalize_answer` before they are compared.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["exact_match", "mean", "normalize_answer", "recall_at_k", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, remove ASCII punctuation, remove the articles a/an/the, collapse whitespace.

    >>> normalize_answer("The  Cat, sat!")
    'cat sat'
    """
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Token-level F1 between normalised prediction and reference (SQuAD).

    With c = the number of tokens the two share (counted with multiplicity),
    P = c / |prediction tokens|, R = c / |reference tokens|, F1 = 2PR / (P + R); 0 when c = 0.
    If either side has no tokens, F1 is 1.0 when both are empty and 0.0 otherwise.
    """
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    if not pred_tokens or not ref_tokens:
        return float(pred_tokens == ref_tokens)
    common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised prediction equals the normalised reference, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def recall_at_k(
    retrieved_ids: Sequence[Sequence[str]], gold_ids: Sequence[Sequence[str]], k: int
) -> float:
    """Fraction of queries with at least one gold id among their first k retrieved ids.

    recall@k = |{q : gold(q) ∩ retrieved(q)[:k] ≠ ∅}| / |{q : gold(q) ≠ ∅}|.
    Queries without gold ids are skipped; returns nan when no query has any.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if len(retrieved_ids) != len(gold_ids):
        raise ValueError(
            f"retrieved_ids has {len(retrieved_ids)} queries but gold_ids has {len(gold_ids)}."
        )
    hits = [
        bool(set(gold) & set(retrieved[:k]))
        for retrieved, gold in zip(retrieved_ids, gold_ids, strict=True)
        if gold
    ]
    return mean(hits)


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean, sum(values) / len(values); nan for no values."""
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan
