"""A run's round metrics in MLflow, written live (``tracking = "mlflow"``), no server."""

from __future__ import annotations

import re
import time
from pathlib import Path

from fedrag_flower.federation.tracking import ROUND_TAG, Tracker

EXPERIMENT = "fedrag-flower"


def mlflow_key(tag: str) -> str:
    """An MLflow metric name for a tracking tag: MLflow accepts letters, digits and
    ``_ - . / space``, so ``@`` becomes ``_at_`` (``evaluate/recall@1`` ->
    ``evaluate/recall_at_1``) and any other character ``_``."""
    return re.sub(r"[^\w\-./ ]", "_", tag.replace("@", "_at_"))


class MLflowTracker(Tracker):
    """One MLflow run in a local SQLite store, ``<folder>/mlflow.db`` (experiment
    ``fedrag-flower``, run named after the run folder), each round one step, committed as the
    round ends. Needs ``pip install 'fedrag-flower[mlflow]'`` (mlflow-skinny and SQLAlchemy);
    browse it with ``mlflow ui --backend-store-uri sqlite:///<folder>/mlflow.db`` (the UI
    needs the full ``mlflow`` package).

    SQLite rather than MLflow's ``./mlruns`` file store, which MLflow 3 refuses by default.
    A resumed run (``first_round`` > 1) reopens the same MLflow run.
    """

    def __init__(self, folder: str | Path, first_round: int = 1) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as error:
            raise ImportError(
                "run-config tracking='mlflow' needs mlflow: pip install 'fedrag-flower[mlflow]'"
            ) from error
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = f"sqlite:///{self.folder / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        if experiment is None:
            experiment_id = self.client.create_experiment(
                EXPERIMENT, artifact_location=(self.folder / "artifacts").as_uri()
            )
        else:
            experiment_id = experiment.experiment_id
        runs = self.client.search_runs(
            [experiment_id], max_results=1, order_by=["attributes.start_time ASC"]
        )
        if runs:  # a resumed run: the same MLflow run continues
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            name = self.folder.parent.name
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id

    def log_settings(self, settings: dict) -> None:
        """The settings as the MLflow run's parameters (compare runs by them)."""
        from mlflow.entities import Param

        params = [Param(key, str(value)) for key, value in settings.items()]
        for start in range(0, len(params), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(tag), value, stamp, step) for tag, value in scalars.items()]
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def logged_rounds(self) -> list[int]:
        history = self.client.get_metric_history(self.run_id, mlflow_key(ROUND_TAG))
        return sorted({metric.step for metric in history})

    def close(self, finished: bool = True) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if finished else "FAILED")
