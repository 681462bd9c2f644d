"""Experiment tracking: a tracked run writes each round to TensorBoard / MLflow as the round
ends (read back with each tracker's own reader), and a resumed run continues the same log
without repeating a round."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fedrag_flower.federation.mlflow_tracker import mlflow_key
from fedrag_flower.federation.rounds import run_rounds
from fedrag_flower.federation.run_folder import RunFolder
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.strategies import build_strategy
from fedrag_flower.federation.tensorboard_tracker import read_scalars
from fedrag_flower.federation.tracking import make_tracker, round_scalars
from tests.fake_grid import FakeGrid, training_site

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
        "failures": [
            {"round": 1, "stage": "evaluate", "node": 22, "kind": "error", "reason": "crash"},
            {"round": 1, "stage": "train", "node": 33, "kind": "no-reply", "reason": "gone"},
        ],
        "privacy": {"epsilon": 0.75, "delta": 1e-5, "releases": 1},
    },
    {
        "round": 2,
        "seconds": 11.0,
        "train": {"ralt-loss": 2.0},
        "evaluate": {"f1": 0.375, "nll": float("nan")},
        "site_train": [{"node": 11, "bytes": 1000, "metrics": {"ralt-loss": 1.5}}],
        "site_evaluate": [],
        "failures": [],
    },
]


def read_mlflow(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every metric of the one MLflow run in ``folder/mlflow.db``, through a fresh client:
    key -> [(step, value)] sorted by step."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fedrag-flower")
    (run,) = client.search_runs([experiment.experiment_id])
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def read_tracked(run_folder: Path, tracking: str) -> dict[str, list[tuple[int, float]]]:
    """The tracker's log of a run folder as its own reader shows it, keyed by our tags
    (MLflow's keys mapped back: ``recall_at_1`` -> ``recall@1``)."""
    if tracking == "tensorboard":
        return read_scalars(run_folder / "tensorboard")
    return {key.replace("_at_", "@"): v for key, v in read_mlflow(run_folder / "mlflow").items()}


def test_round_scalars_hold_aggregated_site_failure_and_privacy_values():
    scalars = round_scalars(HISTORY[0])
    assert scalars["train/ralt-loss"] == 2.5 and scalars["evaluate/recall@1"] == 0.5
    assert scalars["site-11/train/ralt-loss"] == 2.0 and scalars["site-22/train/ralt-loss"] == 3.0
    assert scalars["site-11/train/bytes"] == 1000.0
    assert scalars["site-11/evaluate/f1"] == 0.25 and "site-22/evaluate/f1" not in scalars
    assert scalars["sites/evaluate-errors"] == 1.0 and scalars["sites/train-errors"] == 0.0
    assert scalars["sites/failures"] == 2.0
    assert scalars["privacy/epsilon"] == 0.75 and scalars["privacy/releases"] == 1.0
    assert scalars["round/seconds"] == 12.5
    later = round_scalars(HISTORY[1])
    assert "evaluate/nll" not in later  # a NaN is skipped, not plotted
    assert later["sites/failures"] == 0.0 and "privacy/epsilon" not in later
    assert mlflow_key("evaluate/recall@1") == "evaluate/recall_at_1"


@pytest.mark.parametrize("tracking", ["tensorboard", "mlflow"])
def test_logged_rounds_read_back_with_the_trackers_own_reader(tmp_path, tracking):
    tracker = make_tracker(tracking, tmp_path)
    for entry in HISTORY:
        tracker.log_round(entry)
    assert tracker.logged_rounds() == [1, 2]
    tracker.close()
    scalars = read_tracked(tmp_path, tracking)
    assert scalars["train/ralt-loss"] == [(1, 2.5), (2, 2.0)]
    assert scalars["evaluate/recall@1"] == [(1, 0.5)]
    assert scalars["evaluate/nll"] == [(1, 3.25)]
    assert scalars["site-11/train/ralt-loss"] == [(1, 2.0), (2, 1.5)]
    assert scalars["sites/failures"] == [(1, 2.0), (2, 0.0)]
    assert scalars["privacy/epsilon"] == [(1, 0.75)]
    assert scalars["round/seconds"] == [(1, 12.5), (2, 11.0)]


def test_tracking_off_writes_nothing_and_unknown_tracker_is_an_error(tiny_rag, tmp_path):
    assert make_tracker("none", tmp_path) is None
    with pytest.raises(ValueError, match="'tracking' must be one of .*'wandb'"):
        make_tracker("wandb", tmp_path)
    settings = FederationSettings.from_run_config(
        {"tracking": "tensorbord", "output-dir": str(tmp_path / "out")}
    )
    with pytest.raises(ValueError, match="'tracking' must be one of"):
        RunFolder.create(settings, tiny_rag, build_strategy(settings), {})
    assert not (tmp_path / "out").exists()  # refused before any folder was made


def sites():
    """Two sites: training adds 0.01 to every tensor; site n reports ralt-loss 1.0 and, at
    evaluation, nll = n."""
    return {n: training_site(lambda k, v, r: 0.01, float(n)) for n in (1, 2)}


def settings_for(tmp_path, tracking, **keys) -> FederationSettings:
    base = dict(num_server_rounds=3, min_sites=2, output_dir=str(tmp_path), tracking=tracking)
    return FederationSettings(**(base | keys))


def run(rag, settings, last_round, folder=None, hooks=()):
    strategy = build_strategy(settings)
    if folder is None:
        runfolder = RunFolder.create(settings, rag, strategy, {})
    else:
        runfolder = RunFolder.resume(folder, settings, rag, strategy, {})
    arrays = run_rounds(
        strategy,
        FakeGrid(sites()),
        runfolder.arrays,
        last_round,
        first_round=runfolder.next_round,
        hooks=[runfolder.end_of_round, *hooks],
    )
    return runfolder, arrays


@pytest.mark.parametrize("tracking", ["tensorboard", "mlflow"])
def test_each_round_is_in_the_trackers_files_when_the_round_ends(tiny_rag, tmp_path, tracking):
    """Live: a hook after the run folder's own reads the tracker's files at the end of each
    round, while the run goes on; round r's scalars are there, round r+1's not yet."""
    settings = settings_for(tmp_path, tracking, num_server_rounds=2)
    strategy = build_strategy(settings)
    runfolder = RunFolder.create(settings, tiny_rag, strategy, {})
    seen: dict[int, dict] = {}

    def peek(report, arrays):
        seen[report.round] = read_tracked(runfolder.folder, tracking)

    run_rounds(strategy, FakeGrid(sites()), runfolder.arrays, 2,
               hooks=[runfolder.end_of_round, peek])  # fmt: skip

    after_1 = seen[1]
    assert after_1["train/ralt-loss"] == [(1, 1.0)]
    assert after_1["evaluate/nll"] == [(1, pytest.approx(5 / 3))]  # (1*1 + 2*2) / (1 + 2)
    assert {after_1[f"site-{n}/evaluate/nll"][0] for n in (1, 2)} == {(1, 1.0), (1, 2.0)}
    assert after_1["sites/failures"] == [(1, 0.0)]
    assert [step for step, _ in after_1["round/seconds"]] == [1]
    assert [step for step, _ in seen[2]["train/ralt-loss"]] == [1, 2]
    runfolder.save_final(runfolder.arrays)
    assert runfolder.tracker is None  # closed with the run
    if tracking == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{runfolder.folder / 'mlflow' / 'mlflow.db'}")
        (mlrun,) = client.search_runs([client.get_experiment_by_name("fedrag-flower")
                                       .experiment_id])  # fmt: skip
        assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == runfolder.folder.name
        assert mlrun.data.params["tracking"] == "mlflow"  # the settings, as parameters
        assert mlrun.data.params["num_server_rounds"] == "2"
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(runfolder.folder / "tensorboard"))
        events.Reload()
        (text,) = events.Tensors("run/settings/text_summary")
        table = text.tensor_proto.string_val[0].decode()
        assert "| num_server_rounds | 2 |" in table and "| tracking | tensorboard |" in table


@pytest.mark.parametrize("tracking", ["tensorboard", "mlflow"])
def test_a_resumed_run_continues_the_log_and_logs_each_round_once(tiny_rag, tmp_path, tracking):
    """Round 1 untracked, rounds 2 with tracking (round 1 is caught up from the checkpoint's
    history), round 3 after a second resume: every round exactly once."""
    first, _ = run(tiny_rag, settings_for(tmp_path, "none"), last_round=1)
    assert not (first.folder / tracking).exists()
    resumed = settings_for(tmp_path, tracking, resume_from=str(first.folder))
    run(tiny_rag, resumed, last_round=2, folder=first.folder)
    after_2 = read_tracked(first.folder, tracking)
    assert [step for step, _ in after_2["round/seconds"]] == [1, 2]
    final, arrays = run(tiny_rag, resumed, last_round=3, folder=first.folder)
    final.save_final(arrays)
    scalars = read_tracked(first.folder, tracking)
    assert [step for step, _ in scalars["round/seconds"]] == [1, 2, 3]
    assert scalars["train/ralt-loss"] == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert [step for step, _ in scalars["site-2/evaluate/nll"]] == [1, 2, 3]


def test_tensorboard_hides_rounds_a_stopped_run_logged_past_its_checkpoint(tiny_rag, tmp_path):
    """Round 2 was logged but its checkpoint is gone (moved away as damaged): the resumed run
    trains round 2 again, and TensorBoard shows round 2 once, the new one."""
    settings = settings_for(tmp_path, "tensorboard")
    stopped, _ = run(tiny_rag, settings, last_round=2)
    shutil.rmtree(stopped.folder / "rounds" / "round-002")
    before = read_scalars(stopped.folder / "tensorboard")["round/seconds"]
    assert [step for step, _ in before] == [1, 2]

    resumed = settings_for(tmp_path, "tensorboard", resume_from=str(stopped.folder))
    run(tiny_rag, resumed, last_round=3, folder=stopped.folder)
    after = read_scalars(stopped.folder / "tensorboard")["round/seconds"]
    assert [step for step, _ in after] == [1, 2, 3]
    assert after[0] == before[0] and after[1] != before[1]  # round 2: the resumed run's
    assert len(list((stopped.folder / "tensorboard").glob("events.out.tfevents.*"))) == 2
