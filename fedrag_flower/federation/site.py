"""One site's step: its data, its RAG system, a round of local training, an evaluation.

Plain functions with no Flower in them: ``client_app.py`` turns a Message into these
arguments and the results back into a Message; tests call them directly.
"""

from __future__ import annotations

import random
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from fedrag_flower.cache import cache_dir
from fedrag_flower.data import SiteData, load_site_data, partition_default
from fedrag_flower.evaluation.rag_eval import evaluate_rag
from fedrag_flower.federation.adapters import is_sent_key
from fedrag_flower.federation.node import data_limits, site_name
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.startup import mark, startup_metrics
from fedrag_flower.rag.base_store import BaseKnowledgeStore
from fedrag_flower.rag.generator import Generator
from fedrag_flower.rag.retriever import Retriever
from fedrag_flower.rag.store_backends import store_class, store_options
from fedrag_flower.rag.system import RAGSystem
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT


@dataclass
class Site:
    """A site's private data and where its index lives."""

    name: str
    data: SiteData
    store_dir: Path


def simulation_site(partition_id: int, num_partitions: int, settings: FederationSettings) -> Site:
    """Simulated site ``partition_id``: its share of the embedded default data."""
    data = partition_default(
        partition_id, num_partitions, settings.partitioning, settings.seed, settings.default_data
    )
    name = f"{settings.partitioning}-{num_partitions}-site{partition_id}-seed{settings.seed}"
    if settings.default_data != "faq":
        name = f"{settings.default_data}-{name}"
    return Site(name, data, cache_dir() / "sites" / name / "knowledge_store")


def deployment_site(node_config: dict) -> Site:
    """A real site: its files named in the SuperNode's ``--node-config``
    (``corpus-path``, ``train-path``, optional ``test-path``, ``data-dir``), named by its
    ``site-name`` (default: the ``data-dir`` folder's name), loaded under the size limits
    ``max-file-mb`` and ``max-chunk-chars`` it sets (:func:`~.node.data_limits`)."""
    missing = [k for k in ("corpus-path", "train-path", "data-dir") if k not in node_config]
    if missing:
        raise ValueError(
            f"this SuperNode's --node-config lacks {missing}; start it with "
            "--node-config \"corpus-path='...' train-path='...' test-path='...' data-dir='...'\""
        )
    data = load_site_data(
        node_config["corpus-path"],
        node_config["train-path"],
        node_config.get("test-path"),
        limits=data_limits(node_config),
    )
    data_dir = Path(str(node_config["data-dir"]))
    return Site(site_name(node_config, data_dir.name), data, data_dir / "knowledge_store")


_MODELS: dict[str, tuple[Retriever, Generator]] = {}
_STORES: dict[str, BaseKnowledgeStore] = {}


def site_rag_system(site: Site, settings: FederationSettings) -> RAGSystem:
    """The site's RAG system.

    Base models load once per process and serve every site that process runs (simulation
    keeps its worker across rounds and sites; deployment starts a process per message, so
    this is where its per-message cost goes). The site's index is built on first use,
    saved in ``site.store_dir``, and rebuilt only when the corpus or encoder changes.
    """
    models_key = repr(
        (
            settings.generator_model,
            settings.retriever_model,
            settings.generator_lora(),
            settings.retriever_lora(),
            settings.adapt_chunks,
        )
    )
    if models_key not in _MODELS:
        _MODELS.clear()
        _STORES.clear()
        retriever = Retriever(
            settings.retriever_model,
            None,
            settings.retriever_lora(),
            adapt_chunks=settings.adapt_chunks,
        )
        generator = Generator(settings.generator_model, settings.generator_lora())
        _MODELS[models_key] = (retriever, generator)
    mark("models")
    retriever, generator = _MODELS[models_key]
    store_key = repr((str(site.store_dir), settings.store_backend, settings.store_url))
    if store_key not in _STORES:
        backend = store_class(settings.store_backend)
        _STORES[store_key] = backend.load_or_build(
            site.store_dir,
            site.data.corpus,
            retriever,
            **store_options(settings.store_backend, settings.store_url),
        )
    mark("index")
    return RAGSystem(retriever, _STORES[store_key], generator, settings.rag_config())


def round_pairs(rows: list[dict], settings: FederationSettings, server_round: int) -> list[dict]:
    """The training pairs of this round: all of them, or ``pairs_per_round`` of a fixed
    shuffled order, continuing where the last round stopped."""
    if not settings.pairs_per_round or settings.pairs_per_round >= len(rows):
        return rows
    order = list(range(len(rows)))
    random.Random(settings.seed).shuffle(order)
    start = (server_round - 1) * settings.pairs_per_round
    return [rows[order[(start + i) % len(rows)]] for i in range(settings.pairs_per_round)]


def train_site(
    rag_system: RAGSystem, site: Site, settings: FederationSettings, server_round: int
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One round of local training; returns the trained adapters' tensors (prefixed; B's
    alone with ``lora-freeze-a``) and
    scalar metrics, ``num-examples`` included (the FedAvg weight: training pairs used), and
    in a process' first round its startup cost (:mod:`fedrag_flower.federation.startup`)."""
    start = time.perf_counter()
    pairs = round_pairs(site.data.train, settings, server_round)
    metrics: dict[str, float] = {"num-examples": float(len(pairs)), **startup_metrics()}
    state: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]):  # dropout masks: see round_seed
        torch.manual_seed(round_seed(settings, site, server_round))
        if settings.trains_generator:
            result = HuggingFaceTrainerForRALT(rag_system, pairs, settings.ralt_args(server_round))
            metrics |= {f"ralt-{k}": v for k, v in result.train().metrics().items()}
            adapter = rag_system.generator.adapter_state_dict()
            state |= {f"generator.{k}": v for k, v in adapter.items()}
        if settings.trains_retriever:
            result = HuggingFaceTrainerForLSR(rag_system, pairs, settings.lsr_args(server_round))
            metrics |= {f"lsr-{k}": v for k, v in result.train().metrics().items()}
            adapter = rag_system.retriever.adapter_state_dict()
            state |= {f"retriever.{k}": v for k, v in adapter.items()}
    state = {
        k: v
        for k, v in state.items()
        if is_sent_key(k, settings.trained_prefixes, settings.lora_freeze_a)
    }
    metrics["train-seconds"] = time.perf_counter() - start
    metrics["peak-memory-gb"] = peak_memory_gb()
    return state, metrics


def round_seed(settings: FederationSettings, site: Site, server_round: int) -> int:
    """The seed of torch's generator for one site's round: a function of the run's seed,
    the site's name and the round only.

    Training runs the base models in train mode, and their dropout (MiniLM's is 0.1) draws
    from torch's global generator, whose state otherwise depends on whatever ran before
    in the process (other sites, earlier rounds): two runs of the same sites, or a resumed
    run, then end with different retriever adapters. Seeded here, they end the same.
    """
    return zlib.crc32(f"{settings.seed}:{site.name}:{server_round}".encode())


def evaluate_site(
    rag_system: RAGSystem, site: Site, settings: FederationSettings
) -> dict[str, float]:
    """The current adapters on the site's held-out questions: ``nll``, ``recall@1``,
    ``recall@k``, ``f1``, ``em`` and ``num-examples``."""
    rows = site.data.test
    if not rows:
        return {"num-examples": 0.0}
    start = time.perf_counter()
    metrics = evaluate_rag(
        rag_system, rows, ks=(1, settings.top_k), max_answers=settings.eval_generate
    )
    metrics = {k.replace("_", "-"): v for k, v in metrics.items() if k != "num_examples"}
    metrics["num-examples"] = float(len(rows))
    metrics["eval-seconds"] = time.perf_counter() - start
    metrics["peak-memory-gb"] = peak_memory_gb()
    return metrics


def peak_memory_gb() -> float:
    """Peak resident memory of this process so far, in GiB (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**30 if sys.platform == "darwin" else peak / 2**20  # bytes vs KiB
