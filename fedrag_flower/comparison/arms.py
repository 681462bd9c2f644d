"""The training arms of the comparison, the budget they share, and their round loop.

Every arm starts from the same seeded adapters on the same base models and trains for
``num_server_rounds`` rounds through the server's own round loop and strategy
(``run_rounds(build_strategy(...), InProcessGrid(...))``), its sites answering in this
process with the ClientApp's own functions and mods:

- ``federated``: all sites each round, aggregated by the run config's ``strategy``
  (FedAvg, FedProx, FedAdam, ...) and, if ``dp`` is set, inside its DP wrapper;
- ``local-siteN``: site N alone, the same rounds and pairs per round as in the federation:
  what it could train without joining;
- ``centralized``: one site holding every site's training pairs and the union of their
  corpora; each round trains on as many pairs as all sites together do in a federated
  round, and ``local-steps`` (if set) is multiplied by the number of sites. Optimizer
  steps per training pair are therefore the same in every arm.

The one-site arms (local-only, centralized) always aggregate with plain FedAvg and no DP,
whatever the run config's ``strategy`` and ``dp``: FedAvg over one site is that site's
adapters, which is what "training alone" means. A server optimizer over one site is not
(FedAdam would replace the site's step by its own sign-like Adam step, FedProx's proximal
term would change the local objective, DP with n = 1 would add noise of std z * C to
one site's update), so those arms stay the same reference for every strategy compared.

Every site trains every round: the arm's ``min-sites`` is its number of sites (and the DP
wrapper samples all of them), and the sites' own evaluation rounds are off
(``fraction-evaluate`` 0) since the comparison evaluates every system itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedrag_flower.cache import cache_dir
from fedrag_flower.data import SiteData
from fedrag_flower.federation.adapters import adapter_arrays, adapter_state
from fedrag_flower.federation.in_process_grid import InProcessGrid
from fedrag_flower.federation.rounds import RoundReport, run_rounds
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site
from fedrag_flower.federation.strategies import (
    build_strategy,
    load_strategy_state,
    strategy_state,
)
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
    """Local-only for each site, federated, centralized (in that order). Only the
    federated arm takes the run config's strategy and DP; see the module's docstring."""
    alone = one_site_settings(settings)
    arms = [Arm(local_name(i), [site], alone) for i, site in enumerate(sites)]
    arms.append(Arm(FEDERATED, list(sites), settings))
    arms.append(
        Arm(CENTRALIZED, [pooled_site(sites, settings)], centralized_settings(sites, alone))
    )
    return arms


def one_site_settings(settings: FederationSettings) -> FederationSettings:
    """``settings`` for an arm of one site: plain FedAvg (that site's own adapters), no DP."""
    return dataclasses.replace(settings, strategy="fedavg", dp="none")


def aggregation_label(settings: FederationSettings) -> str:
    """How an arm's rounds aggregate, with the run-config keys that shape it, e.g.
    ``fedadam (fedopt-eta=0.01 fedopt-tau=0.001 ...)`` or
    ``fedavg, dp client-fixed (dp-noise=0.3 dp-clip=0.5)``."""
    keys = {
        "fedavgm": ("server_lr", "server_momentum"),
        "fedprox": ("proximal_mu",),
        "fedadam": ("fedopt_eta", "fedopt_beta_1", "fedopt_beta_2", "fedopt_tau"),
        "fedyogi": ("fedopt_eta", "fedopt_beta_1", "fedopt_beta_2", "fedopt_tau"),
        "fedadagrad": ("fedopt_eta", "fedopt_tau"),
        "fedtrimmedavg": ("trimmed_beta",),
        "krum": ("malicious_sites",),
        "multikrum": ("malicious_sites", "krum_select"),
        "bulyan": ("malicious_sites",),
    }.get(settings.strategy, ())

    def shown(names) -> str:
        return " ".join(f"{n.replace('_', '-')}={getattr(settings, n)}" for n in names)

    label = settings.strategy + (f" ({shown(keys)})" if keys else "")
    if settings.dp != "none":
        label += f", dp {settings.dp} ({shown(('dp_noise', 'dp_clip', 'dp_delta'))})"
    return label


def round_loop_settings(arm: Arm) -> FederationSettings:
    """The arm's settings as its server runs them: every site trains every round
    (min-sites = the arm's sites, DP samples them all), no evaluation rounds."""
    return dataclasses.replace(
        arm.settings,
        min_sites=len(arm.sites),
        fraction_train=1.0,
        fraction_evaluate=0.0,
        dp_sampled_sites=0,
    )


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
        self.retriever = Retriever(
            settings.retriever_model,
            None,
            settings.retriever_lora(),
            adapt_chunks=settings.adapt_chunks,
        )
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
    """Train ``arm`` for ``num_server_rounds`` rounds from the seed's initial adapters,
    through the server's round loop and strategy over an ``InProcessGrid`` of its sites.

    Returns the final adapter tensors and one entry per round: ``round``, aggregated
    ``train`` metrics (with the round's total ``num-examples``), each site's
    ``site_train`` reply summary (site, bytes, metrics), ``updates`` (each site's update
    norm as trained and as sent), ``global_update`` (the round's step of the global
    adapters), ``failures`` (sites that raised), ``privacy`` under DP (epsilon spent so
    far), and ``test`` (what ``after_round`` returns for the round's adapters, if given). After each
    round the adapters, history and the strategy's state (FedOpt moments, DP accountant)
    are saved to ``checkpoint``; a later call resumes after the last saved round (each
    round seeds torch and numpy from the seed and round, so a resumed run draws the same
    dropout masks and DP noise as an uninterrupted one).
    """
    settings = round_loop_settings(arm)
    grid = InProcessGrid([(site, models.system(site, settings)) for site in arm.sites], settings)
    strategy = build_strategy(settings)
    arrays, history = adapter_arrays(models.initial_state), []
    if checkpoint.exists():
        saved = torch.load(checkpoint, weights_only=True)
        arrays, history = adapter_arrays(saved["state"]), saved["history"]
        strategy_arrays = {k: v.numpy() for k, v in saved["strategy_arrays"].items()}
        load_strategy_state(strategy, json.loads(saved["strategy_state"]), strategy_arrays)
    reports: list[RoundReport] = []
    for server_round in range(len(history) + 1, settings.num_server_rounds + 1):
        round_seed = settings.seed * 100_003 + server_round
        torch.manual_seed(round_seed)
        np.random.seed(round_seed)  # the DP wrappers draw their noise from numpy's generator
        before = arrays
        arrays = run_rounds(
            strategy,
            grid,
            before,
            num_rounds=server_round,
            first_round=server_round,
            train_config={"mode": settings.mode},
            hooks=[lambda report, _: reports.append(report)],
        )
        state = adapter_state(arrays)
        step = _global_update(adapter_state(before), state)
        history.append(_history_entry(reports[-1], grid) | step)
        if after_round is not None:
            history[-1]["test"] = after_round(state)
        json_state, strategy_arrays = strategy_state(strategy)
        checkpoint_doc = {
            "state": state,
            "history": history,
            "strategy_state": json.dumps(json_state),
            "strategy_arrays": {k: torch.from_numpy(v) for k, v in strategy_arrays.items()},
        }
        _save_atomically(checkpoint_doc, checkpoint)
    return adapter_state(arrays), history


def _global_update(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """``global_update``: the round's step of the global adapters, ``norm`` = ||x_t -
    x_{t-1}||_2, ``parameters`` P, and ``rms`` = norm / sqrt(P) (the typical step of one
    entry: what a server learning rate such as FedAdam's ``fedopt-eta`` compares to)."""
    norm = sum(float(((after[k].double() - v.double()) ** 2).sum()) for k, v in before.items())
    norm = norm**0.5
    parameters = sum(v.numel() for v in before.values())
    rms = norm / parameters**0.5
    return {"global_update": {"norm": norm, "parameters": parameters, "rms": rms}}


def _history_entry(report: RoundReport, grid: InProcessGrid) -> dict:
    site_train = [{k: v for k, v in s.items() if k != "node"} for s in report.site_train]
    total = sum(s["metrics"]["num-examples"] for s in site_train if "metrics" in s)
    updates = [
        {k: v for k, v in u.items() if k not in ("round", "node")}
        for u in grid.updates
        if u["round"] == report.round
    ]
    entry = {
        "round": report.round,
        "train": report.train | {"num-examples": total},
        "site_train": site_train,
        "updates": updates,
        "failures": report.failures,
    }
    if report.privacy is not None:
        entry["privacy"] = report.privacy
    return entry


def _save_atomically(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
