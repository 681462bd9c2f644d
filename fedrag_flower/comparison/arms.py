"""The training arms of the comparison, the budget they share, and their round loop.

Every arm starts from the same seeded adapters on the same base models and trains for
``num_server_rounds`` rounds with ``fedavg_round`` (the federation's own train step and
aggregation, run in one process):

- ``federated``: all sites each round, FedAvg of their adapters;
- ``local-siteN``: site N alone, the same rounds and pairs per round as in the federation
  (FedAvg over one site is that site's adapters): what it could train without joining;
- ``centralized``: one site holding every site's training pairs and the union of their
  corpora; each round trains on as many pairs as all sites together do in a federated
  round, and ``local-steps`` (if set) is multiplied by the number of sites. Optimizer
  steps per training pair are therefore the same in every arm.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedrag_flower.cache import cache_dir
from fedrag_flower.data import SiteData
from fedrag_flower.federation.in_process import fedavg_round
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site
from fedrag_flower.rag.base_store import BaseKnowledgeStore
from fedrag_flower.rag.generator import Generator
from fedrag_flower.rag.knowledge_store import KnowledgeStore
from fedrag_flower.rag.retriever import Retriever
from fedrag_flower.rag.store_backends import store_class, store_options
from fedrag_flower.rag.system import RAGSystem

FEDERATED = "federated"
CENTRALIZED = "centralized"
UNTRAINED = "untrained"


def local_name(site_index: int) -> str:
    return f"local-site{site_index}"


@dataclass
class Arm:
    """One way of training: who trains each round, and with which settings."""

    name: str
    sites: list[Site]
    settings: FederationSettings


def comparison_arms(sites: list[Site], settings: FederationSettings) -> list[Arm]:
    """Local-only for each site, federated, centralized (in that order)."""
    arms = [Arm(local_name(i), [site], settings) for i, site in enumerate(sites)]
    arms.append(Arm(FEDERATED, list(sites), settings))
    arms.append(
        Arm(CENTRALIZED, [pooled_site(sites, settings)], centralized_settings(sites, settings))
    )
    return arms


def pooled_site(sites: list[Site], settings: FederationSettings) -> Site:
    """All sites' training pairs (site order) and the union of their corpora, as one site."""
    corpus, seen = [], set()
    for site in sites:
        for chunk in site.data.corpus:
            if chunk["id"] not in seen:
                seen.add(chunk["id"])
                corpus.append(chunk)
    train = [row for site in sites for row in site.data.train]
    test = [row for site in sites for row in site.data.test]
    name = f"{settings.default_data}-pooled-{len(sites)}-sites-seed{settings.seed}"
    return Site(
        name, SiteData(corpus, train, test), cache_dir() / "sites" / name / "knowledge_store"
    )


def centralized_settings(sites: list[Site], settings: FederationSettings) -> FederationSettings:
    """The federated budget for one pooled site: per round, sum_s min(pairs-per-round,
    n_s) pairs (all of them when pairs-per-round is 0), and local-steps x sites."""
    pairs = settings.pairs_per_round
    if pairs:
        pairs = sum(min(pairs, len(site.data.train)) for site in sites)
    return dataclasses.replace(
        settings, pairs_per_round=pairs, local_steps=settings.local_steps * len(sites)
    )


class SeedModels:
    """The base models of one seed with their freshly initialised (seeded) adapters, the
    same initial adapters the server sends in round 1, and a RAG system per site over them.

    Every arm of the seed trains these models in turn, each from ``initial_state``.
    """

    def __init__(self, settings: FederationSettings) -> None:
        self.settings = settings
        self.retriever = Retriever(settings.retriever_model, None, settings.retriever_lora())
        self.generator = Generator(settings.generator_model, settings.generator_lora())
        self._stores: dict[str, BaseKnowledgeStore] = {}
        empty = KnowledgeStore([], [], np.zeros((0, self.retriever.dim), "float32"))
        self.initial_state = RAGSystem(self.retriever, empty, self.generator).adapter_state_dict()

    def system(self, site: Site, settings: FederationSettings | None = None) -> RAGSystem:
        """The RAG system of ``site``: its own knowledge store (the run config's backend,
        built once, cached on disk in ``site.store_dir``) over the shared models."""
        key = str(site.store_dir)
        if key not in self._stores:
            backend = self.settings.store_backend  # the app's store-backend / store-url keys
            self._stores[key] = store_class(backend).load_or_build(
                site.store_dir,
                site.data.corpus,
                self.retriever,
                **store_options(backend, self.settings.store_url),
            )
        config = (settings or self.settings).rag_config()
        return RAGSystem(self.retriever, self._stores[key], self.generator, config)


def train_arm(
    arm: Arm,
    models: SeedModels,
    checkpoint: Path,
    after_round: Callable[[dict[str, torch.Tensor]], dict] | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Train ``arm`` for ``num_server_rounds`` rounds from the seed's initial adapters.

    Returns the final adapter tensors and one entry per round: ``round``, aggregated
    ``train`` metrics, each site's ``site_train`` metrics, and ``test`` (what
    ``after_round`` returns for the round's adapters, if given). After each round the
    state and history are saved to ``checkpoint``; a later call resumes after the last
    saved round (each round seeds torch from the seed and round, so a resumed run draws
    the same dropout masks as an uninterrupted one).
    """
    settings = arm.settings
    site_systems = [(site, models.system(site, settings)) for site in arm.sites]
    state, history = models.initial_state, []
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        state, history = saved["state"], saved["history"]
    for server_round in range(len(history) + 1, settings.num_server_rounds + 1):
        torch.manual_seed(settings.seed * 100_003 + server_round)
        state, train_metrics, site_train = fedavg_round(site_systems, state, settings, server_round)
        entry = {"round": server_round, "train": train_metrics, "site_train": site_train}
        if after_round is not None:
            entry["test"] = after_round(state)
        history.append(entry)
        _save_atomically({"state": state, "history": history}, checkpoint)
    return state, history


def _save_atomically(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
