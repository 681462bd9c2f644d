"""Evaluating a RAG system: answer and retrieval metrics."""

from fedrag_flower.evaluation.metrics import (
    exact_match,
    mean,
    normalize_answer,
    recall_at_k,
    token_f1,
)

__all__ = ["exact_match", "mean", "normalize_answer", "recall_at_k", "token_f1"]
