"""One system's figures in a comparison: on the whole test set and on each site's own
test questions, all answered from one knowledge store."""

from __future__ import annotations

import math
import time

from fedrag_flower.evaluation.rag_eval import evaluate_rag
from fedrag_flower.rag.system import RAGSystem

METRICS = ("f1", "em", "recall@1", "recall@3", "nll")
"""Figures every arm reports; higher is better for all but ``nll``."""

_ROW_MEANS = ("f1", "em", "seconds_per_answer")


def evaluate_on_sites(
    rag_system: RAGSystem, test_rows: list[dict], site_rows: dict[str, list[dict]]
) -> dict:
    """``{"all": metrics, "sites": {name: metrics}}`` of ``rag_system``.

    Each site's rows are answered once (generation is the slow part); the sites' test rows
    must partition ``test_rows``, so the whole set's F1 and EM (means over rows) are the
    row-weighted means of the sites': F1_all = sum_s n_s F1_s / sum_s n_s. Recall@k and
    NLL per token of the whole set are computed on the whole set (NLL is per token, not per
    row, so it does not combine by rows). Metrics are those of ``evaluate_rag``.
    """
    ids = [row["id"] for row in test_rows]
    site_ids = [row["id"] for rows in site_rows.values() for row in rows]
    if sorted(site_ids) != sorted(ids):
        raise ValueError(
            f"the sites' test questions ({len(site_ids)}) must be exactly the test set "
            f"({len(ids)}), each on one site"
        )
    start = time.perf_counter()
    sites = {
        name: evaluate_rag(rag_system, rows, ks=(1, 3)) for name, rows in site_rows.items() if rows
    }
    overall = evaluate_rag(rag_system, test_rows, generate=False, ks=(1, 3))
    total = sum(len(rows) for rows in site_rows.values())
    for key in _ROW_MEANS:
        overall[key] = math.fsum(
            sites[name][key] * len(rows) for name, rows in site_rows.items() if rows
        ) / max(total, 1)
    overall["eval_seconds"] = time.perf_counter() - start
    return {"all": overall, "sites": sites}
