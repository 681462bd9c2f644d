"""The server's side: FedAvg over adapters, per-round checkpoints, the saved shared system."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, aggregate_metricrecords

from fedrag_flower.federation.adapters import adapter_arrays, adapter_state, merge_into
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.tracking import log_history, make_tracker
from fedrag_flower.rag.knowledge_store import KnowledgeStore
from fedrag_flower.rag.system import RAGSystem


class AdapterFedAvg(FedAvg):
    """FedAvg over adapter tensors, weighted by ``num-examples``.

    A round may train only one side (RALT: ``generator.*``, LSR: ``retriever.*``); sites
    then send only that side, and the other side keeps its global tensors. Each site's
    replies (bytes sent, its scalar metrics) are kept in ``site_reports[round]`` (train)
    and ``site_evaluations[round]``.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.site_reports: dict[int, list[dict]] = {}
        self.site_evaluations: dict[int, list[dict]] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config, grid: Grid):
        self._global_arrays = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies):
        replies = list(replies)
        self.site_reports[server_round] = [_reply_summary(m) for m in replies]
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        return fedavg_adapters(
            self._global_arrays, [m.content for m in valid], self.weighted_by_key
        )

    def aggregate_evaluate(self, server_round: int, replies):
        replies = list(replies)
        self.site_evaluations[server_round] = [_reply_summary(m) for m in replies]
        return super().aggregate_evaluate(server_round, replies)


def fedavg_adapters(
    global_arrays: ArrayRecord, replies: list[RecordDict], weight_key: str = "num-examples"
) -> tuple[ArrayRecord, MetricRecord]:
    """One round's aggregation of the sites' train replies, as a plain function (what
    ``AdapterFedAvg`` does with the valid replies; the in-process comparison calls it too).

    Adapters: theta = sum_i n_i theta_i / sum_i n_i over the sites' tensors (Flower's
    FedAvg average, weights n_i = ``weight_key``), merged into ``global_arrays`` so a side
    no site sent keeps its global tensors. Metrics: the same n_i-weighted mean.
    """
    arrays = merge_into(global_arrays, aggregate_arrayrecords(replies, weight_key))
    return arrays, aggregate_metricrecords(replies, weight_key)


def _reply_summary(message: Message) -> dict:
    if message.has_error():
        return {"node": message.metadata.src_node_id, "error": str(message.error)}
    content = message.content
    return {
        "node": message.metadata.src_node_id,
        "bytes": sum(r.count_bytes() for r in content.array_records.values()),
        "metrics": {k: v for r in content.metric_records.values() for k, v in r.items()},
    }


def server_rag_system(settings: FederationSettings) -> RAGSystem:
    """The system the server saves: base models with the (seeded, hence identical on every
    site) initial adapters, packaged with ``server_corpus`` as its knowledge store."""
    from fedrag_flower.data import default_corpus, load_corpus
    from fedrag_flower.rag.generator import Generator
    from fedrag_flower.rag.retriever import Retriever

    retriever = Retriever(settings.retriever_model, None, settings.retriever_lora())
    if settings.server_corpus == "none":
        store = KnowledgeStore([], [], np.zeros((0, retriever.dim), "float32"))
    else:
        corpus = (
            default_corpus(settings.default_data)
            if settings.server_corpus == "default"
            else load_corpus(settings.server_corpus)
        )
        store = KnowledgeStore.from_corpus(corpus, retriever)
    generator = Generator(settings.generator_model, settings.generator_lora())
    return RAGSystem(retriever, store, generator, settings.rag_config())


class RunOutputs:
    """A run's folder: ``rounds/round-NNN/`` (adapters after each round, PEFT format),
    ``final/`` (the shared fine-tuned system), ``metrics.json`` and ``metrics.png``."""

    def __init__(self, settings: FederationSettings, rag_system: RAGSystem, run_config: dict):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.folder = Path(settings.output_dir).resolve() / f"run-{stamp}"
        suffix = 1
        while self.folder.exists():
            suffix += 1
            self.folder = self.folder.with_name(f"run-{stamp}-{suffix}")
        self.folder.mkdir(parents=True)
        self.settings = settings
        self.rag_system = rag_system
        self.run_config = dict(run_config)
        self.round_seconds: dict[int, float] = {}
        self._last = time.perf_counter()
        # Experiment tracking: made here so a wrong `tracking` key fails before training.
        self.tracker = make_tracker(settings.tracking, self.folder)

    def extra(self, server_round: int) -> dict:
        return {"server_round": server_round, "run_config": self.run_config}

    def checkpoint(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Save the global adapters of ``server_round`` (an ``evaluate_fn`` for FedAvg)."""
        now = time.perf_counter()
        if server_round > 0:
            self.round_seconds[server_round] = now - self._last
        self.rag_system.load_adapter_state_dict(adapter_state(arrays))
        self.rag_system.save_pretrained(
            self.folder / "rounds" / f"round-{server_round:03d}",
            extra=self.extra(server_round),
            include_store=False,
        )
        self._last = time.perf_counter()
        return None

    def save_final(self, result: Result, strategy: AdapterFedAvg) -> Path:
        """The shared system (with the server corpus' store), metrics history and plot."""
        self.rag_system.load_adapter_state_dict(adapter_state(result.arrays))
        history = metrics_history(result, self.round_seconds, strategy)
        final = self.rag_system.save_pretrained(
            self.folder / "final",
            extra=self.extra(self.settings.num_server_rounds) | {"history": history},
            include_store=len(self.rag_system.knowledge_store) > 0,
        )
        document = {
            "settings": asdict(self.settings),
            "sizes": model_sizes(self.rag_system),
            "history": history,
        }
        (self.folder / "metrics.json").write_text(json.dumps(document, indent=2))
        plot_history(history, self.folder / "metrics.png")
        # Experiment tracking (run-config key `tracking`): the same history, one step a round.
        log_history(self.tracker, history)
        return final


def model_sizes(rag_system: RAGSystem) -> dict[str, int]:
    """Bytes of the full generator and retriever weights, and of their adapters: what a
    site would send per round without LoRA, next to what it does send."""

    def nbytes(params) -> int:
        return sum(p.numel() * p.element_size() for p in params)

    generator, retriever = rag_system.generator.model, rag_system.retriever.query_model
    return {
        "generator_full": nbytes(generator.parameters()),
        "retriever_full": nbytes(retriever.parameters()),
        "generator_adapter": nbytes(rag_system.generator.trainable_parameters()),
        "retriever_adapter": nbytes(rag_system.retriever.trainable_parameters()),
    }


def initial_arrays(rag_system: RAGSystem) -> ArrayRecord:
    return adapter_arrays(rag_system.adapter_state_dict())


def metrics_history(
    result: Result, round_seconds: dict[int, float], strategy: AdapterFedAvg
) -> list[dict]:
    """One entry per round: wall time, aggregated train and evaluate metrics, and each
    site's replies (bytes sent and its own metrics)."""
    rounds = sorted(set(result.train_metrics_clientapp) | set(result.evaluate_metrics_clientapp))
    return [
        {
            "round": r,
            "seconds": round_seconds.get(r),
            "train": dict(result.train_metrics_clientapp.get(r, {})),
            "evaluate": dict(result.evaluate_metrics_clientapp.get(r, {})),
            "site_train": strategy.site_reports.get(r, []),
            "site_evaluate": strategy.site_evaluations.get(r, []),
        }
        for r in rounds
    ]


def plot_history(history: list[dict], path: Path) -> None:
    """Per-round metrics as a PNG: losses, answer quality, retrieval, likelihood."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("training loss", "train", ["ralt-loss", "lsr-loss"]),
        ("answers", "evaluate", ["f1", "em"]),
        ("retrieval", "evaluate", [k for k in _keys(history, "evaluate") if "recall" in k]),
        ("response NLL / token", "evaluate", ["nll"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    rounds = [h["round"] for h in history]
    for ax, (title, part, keys) in zip(axes, panels):
        for key in keys:
            values = [h[part].get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(rounds, [np.nan if v is None else v for v in values], "o-", label=key)
        ax.set_title(title)
        ax.set_xlabel("round")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _keys(history: list[dict], part: str) -> list[str]:
    return sorted({k for h in history for k in h[part]})
