"""One system's figures in a comparison: on the whole test set and on each site's own
test questions, all answered from one knowledge store."""

from __future__ import annotations

import time

from fedrag_flower.evaluation.metrics import exact_match, mean, token_f1
from fedrag_flower.evaluation.rag_eval import answer_rows, evaluate_rag
from fedrag_flower.rag.system import RAGSystem

METRICS = ("f1", "em", "recall@1", "recall@3", "nll")
"""Figures every arm reports; higher is better for all but ``nll``."""

ANSWER_BATCH = 32
"""Answers generated at once: the whole test set is answered in one pass of such batches
(not site by site, which would leave a short batch per site)."""


def evaluate_on_sites(
    rag_system: RAGSystem, test_rows: list[dict], site_rows: dict[str, list[dict]]
) -> dict:
    """``{"all": metrics, "sites": {name: metrics}}`` of ``rag_system``.

    Every test question is answered once, in batches of ``ANSWER_BATCH`` across sites
    (generation is the slow part); the sites' test rows must partition ``test_rows``. A
    site's F1 and EM are means over its rows' answers, the whole set's over all rows.
    Recall@k and NLL per token are computed on each site's rows and on the whole set (NLL
    is per token, not per row, so it does not combine by rows). Metrics are those of
    ``evaluate_rag``.
    """
    ids = [row["id"] for row in test_rows]
    site_ids = [row["id"] for rows in site_rows.values() for row in rows]
    if sorted(site_ids) != sorted(ids):
        raise ValueError(
            f"the sites' test questions ({len(site_ids)}) must be exactly the test set "
            f"({len(ids)}), each on one site"
        )
    start = time.perf_counter()
    answers, seconds = answer_rows(rag_system, test_rows, ANSWER_BATCH)
    f1 = {row["id"]: token_f1(a, row["response"]) for a, row in zip(answers, test_rows)}
    em = {row["id"]: exact_match(a, row["response"]) for a, row in zip(answers, test_rows)}

    def with_answers(metrics: dict, rows: list[dict]) -> dict:
        metrics["f1"] = mean(f1[row["id"]] for row in rows)
        metrics["em"] = mean(em[row["id"]] for row in rows)
        metrics["seconds_per_answer"] = seconds / len(test_rows)
        return metrics

    sites = {
        name: with_answers(evaluate_rag(rag_system, rows, generate=False, ks=(1, 3)), rows)
        for name, rows in site_rows.items()
        if rows
    }
    overall = with_answers(
        evaluate_rag(rag_system, test_rows, generate=False, ks=(1, 3)), test_rows
    )
    overall["eval_seconds"] = time.perf_counter() - start
    return {"all": overall, "sites": sites}
