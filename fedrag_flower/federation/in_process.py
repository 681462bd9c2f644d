"""FedAvg rounds in one process, without Ray or a SuperLink.

A round here is what a Flower round does, by the same functions: each site loads the
global adapters and runs ``train_site`` (what the ClientApp's ``train`` calls), its reply
becomes the same records a ClientApp sends (``adapter_arrays`` + its metrics), and
``fedavg_adapters`` (the app's FedAvg as a plain function) averages them. Sites run
one after another on one set of models, each from the same global tensors, so the result
is the federated one without processes or messages. The comparison of training regimes
(``fedrag_flower.comparison``) runs every arm with it.
"""

from __future__ import annotations

import torch
from flwr.app import MetricRecord, RecordDict

from fedrag_flower.federation.adapters import adapter_arrays, adapter_state
from fedrag_flower.federation.server import fedavg_adapters
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, train_site
from fedrag_flower.rag.system import RAGSystem


def fedavg_round(
    site_systems: list[tuple[Site, RAGSystem]],
    global_state: dict[str, torch.Tensor],
    settings: FederationSettings,
    server_round: int,
) -> tuple[dict[str, torch.Tensor], dict[str, float], list[dict]]:
    """One FedAvg round over ``site_systems`` (each site with its RAG system: its own
    knowledge store; the models may be shared, since every site starts from
    ``global_state``).

    Returns the new global adapter tensors, the aggregated train metrics (weighted by
    ``num-examples``, as the server aggregates them, plus the round's total
    ``num-examples``) and each site's own train metrics.
    With one site the average is that site's tensors: training alone, by the same path.
    """
    global_arrays = adapter_arrays(global_state)
    replies, site_reports = [], []
    for site, rag_system in site_systems:
        rag_system.load_adapter_state_dict(adapter_state(global_arrays))
        state, metrics = train_site(rag_system, site, settings, server_round)
        replies.append(
            RecordDict({"arrays": adapter_arrays(state), "metrics": MetricRecord(metrics)})
        )
        site_reports.append({"site": site.name, "metrics": metrics})
    arrays, metrics = fedavg_adapters(global_arrays, replies)
    # Flower's metric average drops the weight key; keep the round's total pairs.
    total = sum(report["metrics"]["num-examples"] for report in site_reports)
    return adapter_state(arrays), dict(metrics) | {"num-examples": total}, site_reports
