"""Evaluating a RAG system: answer and retrieval metrics."""

from fedrag_flower.evaluation.metrics import (
    exact_match,
    mean,
    normalize_answer,
    recall_at_k,
    token_f1,
)

__all__ = [
    "evaluate_rag",
    "exact_match",
    "mean",
    "normalize_answer",
    "recall_at_k",
    "response_nll",
    "token_f1",
]


def __getattr__(name: str):
    # The model-based evaluation needs torch; the metrics above do not.
    if name in ("evaluate_rag", "response_nll"):
        from fedrag_flower.evaluation import rag_eval

        return getattr(rag_eval, name)
    raise AttributeError(f"module 'fedrag_flower.evaluation' has no attribute {name!r}")
