"""Experiment tracking: a tracked run writes TensorBoard event files that read back with the
logged per-round aggregated and per-site values."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedrag_flower.federation.tracking import TensorBoardTracker, log_history, make_tracker

HISTORY = [
    {
        "round": 1,
        "seconds": 12.5,
        "train": {"ralt-loss": 2.5, "lsr-loss": 0.75, "num-examples": 48.0},
        "evaluate": {"f1": 0.125, "recall@1": 0.5, "nll": 3.25},
        "site_train": [
            {"node": 11, "bytes": 1000, "metrics": {"ralt-loss": 2.0, "num-examples": 24.0}},
            {"node": 22, "bytes": 1000, "metrics": {"ralt-loss": 3.0, "num-examples": 24.0}},
        ],
        "site_evaluate": [
            {"node": 11, "bytes": 0, "metrics": {"f1": 0.25}},
            {"node": 22, "error": "the ClientApp crashed"},
        ],
    },
    {
        "round": 2,
        "seconds": 11.0,
        "train": {"ralt-loss": 2.0},
        "evaluate": {"f1": 0.375, "nll": float("nan")},
        "site_train": [{"node": 11, "bytes": 1000, "metrics": {"ralt-loss": 1.5}}],
        "site_evaluate": [],
    },
]


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under ``log_dir``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tracked_history_reads_back_from_tensorboard_files(tmp_path):
    tracker = make_tracker("tensorboard", tmp_path)
    log_history(tracker, HISTORY)
    files = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file written"
    scalars = read_scalars(tmp_path / "tensorboard")
    assert scalars["train/ralt-loss"] == [(1, 2.5), (2, 2.0)]
    assert scalars["evaluate/f1"] == [(1, 0.125), (2, 0.375)]
    assert scalars["evaluate/nll"] == [(1, 3.25)]  # a NaN is skipped, not plotted
    assert scalars["site-11/train/ralt-loss"] == [(1, 2.0), (2, 1.5)]
    assert scalars["site-22/train/ralt-loss"] == [(1, 3.0)]
    assert scalars["site-11/train/bytes"] == [(1, 1000.0), (2, 1000.0)]
    assert scalars["site-11/evaluate/f1"] == [(1, 0.25)]
    assert "site-22/evaluate/f1" not in scalars
    assert scalars["sites/evaluate-errors"] == [(1, 1.0)]
    assert scalars["round/seconds"] == [(1, 12.5), (2, 11.0)]


def test_tracking_off_writes_nothing_and_unknown_tracker_is_an_error(tmp_path):
    assert make_tracker("none", tmp_path) is None
    log_history(None, HISTORY)
    assert not (tmp_path / "tensorboard").exists()
    with pytest.raises(ValueError, match="'tracking' must be one of .*'wandb'"):
        make_tracker("wandb", tmp_path)


def test_run_outputs_of_a_tracked_run_write_tensorboard_beside_metrics_json(tiny_rag, tmp_path):
    """The server's own path: RunOutputs made from run-config ``tracking="tensorboard"``,
    a round's checkpoint, then save_final with Flower's Result of that round."""
    from flwr.app import MetricRecord
    from flwr.serverapp.strategy import Result

    from fedrag_flower.federation.server import RunOutputs, initial_arrays
    from fedrag_flower.federation.settings import FederationSettings

    settings = FederationSettings.from_run_config(
        {"tracking": "tensorboard", "output-dir": str(tmp_path), "num-server-rounds": 1}
    )
    outputs = RunOutputs(settings, tiny_rag, {"tracking": "tensorboard"})
    assert isinstance(outputs.tracker, TensorBoardTracker)
    arrays = initial_arrays(tiny_rag)
    outputs.checkpoint(0, arrays)
    outputs.checkpoint(1, arrays)
    result = Result(
        arrays=arrays,
        train_metrics_clientapp={1: MetricRecord({"ralt-loss": 1.75})},
        evaluate_metrics_clientapp={1: MetricRecord({"f1": 0.5})},
    )

    class Strategy:  # the two reply logs RunOutputs reads from the strategy
        site_reports = {1: [{"node": 7, "bytes": 64, "metrics": {"ralt-loss": 1.75}}]}
        site_evaluations = {1: [{"node": 7, "bytes": 0, "metrics": {"f1": 0.5}}]}

    outputs.save_final(result, Strategy())
    assert (outputs.folder / "metrics.json").exists() and (outputs.folder / "metrics.png").exists()
    scalars = read_scalars(outputs.folder / "tensorboard")
    assert scalars["train/ralt-loss"] == [(1, 1.75)]
    assert scalars["evaluate/f1"] == [(1, 0.5)]
    assert scalars["site-7/train/ralt-loss"] == [(1, 1.75)]
    assert scalars["site-7/evaluate/f1"] == [(1, 0.5)]
    assert scalars["round/seconds"][0][0] == 1


def test_wrong_tracking_key_fails_before_training(tiny_rag, tmp_path):
    from fedrag_flower.federation.server import RunOutputs
    from fedrag_flower.federation.settings import FederationSettings

    settings = FederationSettings.from_run_config(
        {"tracking": "tensorbord", "output-dir": str(tmp_path)}
    )
    with pytest.raises(ValueError, match="'tracking' must be one of"):
        RunOutputs(settings, tiny_rag, {})
