"""The server's round loop: Flower's ``Strategy.start``, resumable and with a per-round hook.

Each round: send the global adapters to the sampled sites to train, aggregate their
replies, send the result to be evaluated, aggregate the metrics, then call every hook with
a ``RoundReport`` and the new global arrays. Checkpointing, ``metrics.json`` and any
experiment tracker are hooks. ``first_round`` > 1 continues a stopped run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedrag_flower.federation.adapter_strategy import AdapterStrategy
from fedrag_flower.federation.privacy import privacy_spent
from fedrag_flower.federation.reporting import learning_summary

log = logging.getLogger("flwr.fedrag")  # through Flower's log handler


@dataclass
class RoundReport:
    """What happened in one round: aggregated metrics, each site's replies, each site's
    failure (``{"round", "stage", "node", "kind", "reason"}``) and, under DP, the privacy
    spent so far."""

    round: int
    seconds: float
    train: dict = field(default_factory=dict)
    evaluate: dict = field(default_factory=dict)
    site_train: list[dict] = field(default_factory=list)
    site_evaluate: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    privacy: dict | None = None

    def as_dict(self) -> dict:
        entry = {
            "round": self.round,
            "seconds": self.seconds,
            "train": self.train,
            "evaluate": self.evaluate,
            "site_train": self.site_train,
            "site_evaluate": self.site_evaluate,
            "failures": self.failures,
        }
        if self.privacy is not None:
            entry["privacy"] = self.privacy
        return entry


RoundHook = Callable[[RoundReport, ArrayRecord], None]


def run_rounds(
    strategy: AdapterStrategy,
    grid: Grid,
    arrays: ArrayRecord,
    num_rounds: int,
    first_round: int = 1,
    timeout: float = 3600.0,
    train_config: dict | None = None,
    evaluate_config: dict | None = None,
    hooks: Sequence[RoundHook] = (),
) -> ArrayRecord:
    """Run rounds ``first_round .. num_rounds`` from ``arrays``; returns the final arrays.

    Raises ``TooFewSitesError`` (from the strategy) when a round has fewer usable training
    replies than min-sites; the hooks have then been called for every earlier round only.
    """
    for server_round in range(first_round, num_rounds + 1):
        log.info("round %d/%d", server_round, num_rounds)
        start = time.perf_counter()
        messages = strategy.configure_train(
            server_round, arrays, ConfigRecord(dict(train_config or {})), grid
        )
        replies = grid.send_and_receive(messages, timeout=timeout)
        new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays = new_arrays
        messages = strategy.configure_evaluate(
            server_round, arrays, ConfigRecord(dict(evaluate_config or {})), grid
        )
        replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
        evaluate_metrics = strategy.aggregate_evaluate(server_round, replies)
        report = RoundReport(
            round=server_round,
            seconds=time.perf_counter() - start,
            train=dict(train_metrics or {}),
            evaluate=dict(evaluate_metrics or {}),
            site_train=strategy.site_train.get(server_round, []),
            site_evaluate=strategy.site_evaluate.get(server_round, []),
            failures=strategy.round_events(server_round),
            privacy=privacy_spent(strategy),
        )
        if report.evaluate:
            log.info("round %d: %s", server_round, learning_summary(report.evaluate))
        if report.privacy:
            log.info(
                "round %d: privacy spent epsilon=%.4f at delta=%g (%d releases)",
                server_round,
                report.privacy["epsilon"],
                report.privacy["delta"],
                report.privacy["releases"],
            )
        for hook in hooks:
            hook(report, arrays)
    return arrays
