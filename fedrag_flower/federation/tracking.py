"""Experiment tracking: a run's per-round metrics in TensorBoard, beside metrics.json/png.

Chosen by the run-config key ``tracking``: ``"none"`` (default) or ``"tensorboard"``
(event files under ``<run folder>/tensorboard``, read with
``tensorboard --logdir outputs``; local files, no server). Scalars, one step per round:

- ``train/<metric>`` and ``evaluate/<metric>``: the metrics FedAvg aggregated over sites
  (weighted by ``num-examples``), e.g. ``train/ralt-loss``, ``evaluate/f1``;
- ``site-<node>/train/<metric>``, ``site-<node>/evaluate/<metric>``: each site's own
  reply, plus ``site-<node>/train/bytes`` (adapter bytes it sent); a site whose reply
  was an error is counted in ``sites/train-errors`` / ``sites/evaluate-errors``;
- ``round/seconds``: the round's wall time.
"""

from __future__ import annotations

import math
from pathlib import Path

TRACKERS = ("none", "tensorboard")


class TensorBoardTracker:
    """Writes round metrics as TensorBoard scalars (``torch.utils.tensorboard``, which needs
    the ``tensorboard`` package: ``pip install 'fedrag-flower[tracking]'``)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "run-config tracking='tensorboard' needs the tensorboard package: "
                "pip install 'fedrag-flower[tracking]'"
            ) from error
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def log_round(
        self,
        server_round: int,
        aggregated_train: dict[str, float],
        aggregated_evaluate: dict[str, float],
        site_records: dict[str, list[dict]],
        seconds: float | None = None,
    ) -> None:
        """One round: aggregated metrics, each site's (``site_records["train"]`` and
        ``["evaluate"]``: ``{"node", "bytes", "metrics"}`` or ``{"node", "error"}``)."""
        self._scalars("train", aggregated_train, server_round)
        self._scalars("evaluate", aggregated_evaluate, server_round)
        for part in ("train", "evaluate"):
            records = site_records.get(part, [])
            errors = sum("error" in r for r in records)
            if records:
                self.writer.add_scalar(f"sites/{part}-errors", errors, server_round)
            for record in records:
                if "error" in record:
                    continue
                prefix = f"site-{record['node']}/{part}"
                self._scalars(prefix, record.get("metrics", {}), server_round)
                if part == "train" and "bytes" in record:
                    self.writer.add_scalar(f"{prefix}/bytes", record["bytes"], server_round)
        if seconds is not None:
            self.writer.add_scalar("round/seconds", seconds, server_round)
        self.writer.flush()

    def _scalars(self, prefix: str, metrics: dict, step: int) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)

    def close(self) -> None:
        self.writer.close()


def make_tracker(tracking: str, run_folder: str | Path) -> TensorBoardTracker | None:
    """The tracker the run-config key ``tracking`` asks for (``None`` for ``"none"``)."""
    if tracking == "none" or not tracking:
        return None
    if tracking == "tensorboard":
        return TensorBoardTracker(Path(run_folder) / "tensorboard")
    raise ValueError(f"run-config 'tracking' must be one of {TRACKERS}, got {tracking!r}")


def log_history(tracker: TensorBoardTracker | None, history: list[dict]) -> None:
    """Log a run's history (``metrics_history``'s entries, one per round) to ``tracker``
    and close it; nothing when tracking is off (``None``)."""
    if tracker is None:
        return
    try:
        for entry in history:
            tracker.log_round(
                entry["round"],
                entry.get("train", {}),
                entry.get("evaluate", {}),
                {"train": entry.get("site_train", []), "evaluate": entry.get("site_evaluate", [])},
                seconds=entry.get("seconds"),
            )
    finally:
        tracker.close()
