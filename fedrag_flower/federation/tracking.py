"""Experiment tracking: each round's metrics in TensorBoard or MLflow, live, as rounds end.

Chosen by the run-config key ``tracking``: ``"none"`` (default), ``"tensorboard"`` (event
files in ``<run folder>/tensorboard``: ``tensorboard --logdir outputs``) or ``"mlflow"`` (a
local SQLite store, ``<run folder>/mlflow/mlflow.db``: ``mlflow ui --backend-store-uri
sqlite:///<run folder>/mlflow/mlflow.db``). Local files, no server. The run folder's
per-round hook (``RunFolder.end_of_round``) logs each round once its checkpoint is written,
and flushes, so a running federation can be watched.

Scalars, one step per round (``round_scalars``, the same tags for both trackers):

- ``train/<metric>``, ``evaluate/<metric>``: the metrics aggregated over sites, e.g.
  ``train/ralt-loss``, ``evaluate/f1``;
- ``site-<node>/train/<metric>``, ``site-<node>/evaluate/<metric>``: each site's own reply,
  plus ``site-<node>/train/bytes`` (the adapter bytes it sent);
- ``sites/train-errors``, ``sites/evaluate-errors``: replies that were errors;
  ``sites/failures``: every failure of the round (errors, no replies, rejected updates);
- ``privacy/epsilon``, ``privacy/releases``, ...: under differential privacy, spent so far;
- ``round/seconds``: the round's wall time, logged for every round (resume reads it).

Non-finite values are skipped. A resumed run (``resume-from``) logs into the same files:
rounds its checkpoint holds but the tracker missed are logged from the history, and rounds
after the checkpoint that a stopped run had logged are not repeated (TensorBoard hides them
with ``purge_step``; MLflow never got them, as a round is logged after its checkpoint).
"""

from __future__ import annotations

import math
from pathlib import Path

TRACKERS = ("none", "tensorboard", "mlflow")
ROUND_TAG = "round/seconds"  # logged for every round: the tracker's record of rounds done


def round_scalars(entry: dict) -> dict[str, float]:
    """Tag -> value for one round; ``entry`` is a ``RoundReport.as_dict()`` (a
    metrics.json history entry)."""
    scalars: dict[str, float] = {}

    def add(prefix: str, metrics: dict) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                scalars[f"{prefix}/{name}"] = float(value)

    add("train", entry.get("train", {}))
    add("evaluate", entry.get("evaluate", {}))
    for part in ("train", "evaluate"):
        records = entry.get(f"site_{part}", [])
        if records:
            scalars[f"sites/{part}-errors"] = float(sum("error" in r for r in records))
        for record in records:
            if "error" in record:
                continue
            prefix = f"site-{record['node']}/{part}"
            add(prefix, record.get("metrics", {}))
            if part == "train" and "bytes" in record:
                scalars[f"{prefix}/bytes"] = float(record["bytes"])
    if "failures" in entry:
        scalars["sites/failures"] = float(len(entry["failures"]))
    if entry.get("privacy"):
        add("privacy", entry["privacy"])
    scalars[ROUND_TAG] = float(entry.get("seconds") or 0.0)
    return scalars


class Tracker:
    """A tracker: ``log_settings`` records the run's settings once, ``log_scalars`` writes
    one step and flushes; ``logged_rounds`` reads back the rounds already written (for
    resume); ``close`` ends the run."""

    def log_settings(self, settings: dict) -> None:
        raise NotImplementedError

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        raise NotImplementedError

    def logged_rounds(self) -> list[int]:
        raise NotImplementedError

    def close(self, finished: bool = True) -> None:
        raise NotImplementedError

    def log_round(self, entry: dict) -> None:
        """One round (a ``RoundReport.as_dict()``), written and flushed now."""
        self.log_scalars(int(entry["round"]), round_scalars(entry))

    def catch_up(self, history: list[dict]) -> None:
        """Log the rounds of ``history`` (a resumed run's, up to its checkpoint) that this
        tracker has not logged yet, e.g. a run stopped between a checkpoint and its log, or
        one that ran with ``tracking="none"`` until now."""
        done = set(self.logged_rounds())
        for entry in history:
            if int(entry["round"]) not in done:
                self.log_round(entry)


def make_tracker(tracking: str, run_folder: str | Path, first_round: int = 1) -> Tracker | None:
    """The tracker the run-config key ``tracking`` asks for (``None`` for ``"none"``),
    logging into ``run_folder``; ``first_round`` > 1 continues a resumed run's log."""
    if tracking == "none" or not tracking:
        return None
    if tracking == "tensorboard":
        from fedrag_flower.federation.tensorboard_tracker import TensorBoardTracker

        return TensorBoardTracker(Path(run_folder) / "tensorboard", first_round)
    if tracking == "mlflow":
        from fedrag_flower.federation.mlflow_tracker import MLflowTracker

        return MLflowTracker(Path(run_folder) / "mlflow", first_round)
    raise ValueError(f"run-config 'tracking' must be one of {TRACKERS}, got {tracking!r}")


def check_tracking(tracking: str) -> None:
    """Raise the error ``make_tracker`` would, without opening anything."""
    if tracking and tracking not in TRACKERS:
        raise ValueError(f"run-config 'tracking' must be one of {TRACKERS}, got {tracking!r}")
