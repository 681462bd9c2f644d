"""A run's folder: per-round checkpoints, the report, the final system, and resuming.

Layout::

    run-YYYYmmdd-HHMMSS/
      rounds/round-NNN/        global adapters after round NNN (PEFT format, loadable with
                               RAGSystem.from_pretrained given a corpus), plus
        server_state.json      round, settings fingerprint, history so far, strategy and
                               random-generator state
        strategy_state.npz     the strategy's arrays (FedAvgM momentum, FedOpt moments)
      final/                   the shared fine-tuned system, with the server corpus' store
      metrics.json, metrics.png
      tensorboard/ or mlflow/  run-config ``tracking``: each round logged as it ends

Each ``round-NNN`` folder is assembled beside its place and renamed in (``atomic_directory``),
so a checkpoint is complete or absent. ``resume-from="<run folder>"`` continues from the
highest complete round with round NNN+1, into the same folder.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord

from fedrag_flower.atomic import atomic_directory
from fedrag_flower.federation.adapter_strategy import AdapterStrategy, TooFewSitesError
from fedrag_flower.federation.adapters import adapter_arrays, adapter_state
from fedrag_flower.federation.reporting import write_json_atomic, write_report
from fedrag_flower.federation.rounds import RoundReport
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.strategies import load_strategy_state, strategy_state
from fedrag_flower.federation.tracking import Tracker, check_tracking, make_tracker
from fedrag_flower.rag.system import MANIFEST, RAGSystem

SERVER_STATE = "server_state.json"
STRATEGY_ARRAYS = "strategy_state.npz"
ROUND_FOLDER = re.compile(r"^round-(\d{3,})$")
# Keys a resumed run may change; every other setting must equal the stopped run's.
RESUMABLE_CHANGES = {
    "num_server_rounds", "resume_from", "output_dir", "round_timeout", "min_sites", "tracking"
}  # fmt: skip


class CheckpointError(ValueError):
    """A run folder or checkpoint that cannot be resumed; nothing was written."""


class RunFolder:
    """The folder of one run, and the hook (``end_of_round``) that fills it each round."""

    def __init__(
        self,
        folder: Path,
        settings: FederationSettings,
        rag_system: RAGSystem,
        strategy: AdapterStrategy,
        run_config: dict,
    ) -> None:
        self.folder = Path(folder)
        self.settings = settings
        self.rag_system = rag_system
        self.strategy = strategy
        self.run_config = dict(run_config)
        self.history: list[dict] = []
        self.stops: list[dict] = []
        self.next_round = 1
        self.arrays: ArrayRecord = adapter_arrays(rag_system.adapter_state_dict())
        # Experiment tracking (run-config `tracking`), opened by create / resume.
        self.tracker: Tracker | None = None

    # -- starting ---------------------------------------------------------------------------

    @classmethod
    def create(cls, settings, rag_system, strategy, run_config) -> RunFolder:
        """A new ``run-<time>`` folder under ``output-dir``, with the round-0 checkpoint
        (the seeded initial adapters)."""
        check_tracking(settings.tracking)  # a wrong key fails before any folder is made
        stamp = time.strftime("%Y%m%d-%H%M%S")
        folder = Path(settings.output_dir).resolve() / f"run-{stamp}"
        suffix = 1
        while folder.exists():
            suffix += 1
            folder = folder.with_name(f"run-{stamp}-{suffix}")
        folder.mkdir(parents=True)
        run = cls(folder, settings, rag_system, strategy, run_config)
        random.seed(settings.seed)
        np.random.seed(settings.seed)  # Flower's DP noise draws from numpy's global generator
        run.save_checkpoint(0)
        run.tracker = make_tracker(settings.tracking, folder)
        if run.tracker is not None:
            run.tracker.log_settings(asdict(settings))
        return run

    @classmethod
    def resume(cls, folder, settings, rag_system, strategy, run_config) -> RunFolder:
        """The stopped run in ``folder``, restored from its last complete checkpoint:
        adapters, history, strategy state and random generators. Raises
        ``CheckpointError`` (writing nothing) for a folder that is not a run, a checkpoint
        written with other settings, or one that cannot be read."""
        check_tracking(settings.tracking)
        folder = Path(folder).resolve()
        checkpoint = last_checkpoint(folder)
        run = cls(folder, settings, rag_system, strategy, run_config)
        state = _read_state(checkpoint)
        mismatched = _fingerprint_mismatch(state.get("settings", {}), settings)
        if mismatched:
            raise CheckpointError(
                f"{checkpoint} was written with other settings: {mismatched}. Resume with the "
                f"stopped run's run config (only {sorted(_key(k) for k in RESUMABLE_CHANGES)} "
                "may change)"
            )
        done = int(state["round"])
        if done >= settings.num_server_rounds:
            raise CheckpointError(
                f"{folder} already holds round {done}; set num-server-rounds above {done} to "
                "continue it"
            )
        try:
            rag_system.generator.load_adapter(str(checkpoint / "generator_adapter"))
            rag_system.retriever.load_adapter(str(checkpoint / "retriever_adapter"))
            with np.load(checkpoint / STRATEGY_ARRAYS) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as error:  # noqa: BLE001 - any unreadable file: say which checkpoint
            raise CheckpointError(
                f"checkpoint {checkpoint} cannot be read ({type(error).__name__}: {error}); "
                "nothing was changed. Move that round folder away to resume from the round "
                "before it"
            ) from None
        load_strategy_state(strategy, state["strategy"], arrays)
        rng = state["rng"]
        random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
        np.random.set_state(
            ("MT19937", arrays["rng/numpy"], *rng["numpy"])
        )  # fmt: skip
        run.arrays = adapter_arrays(rag_system.adapter_state_dict())
        run.history = list(state["history"])
        run.stops = _previous_stops(folder)
        run.next_round = done + 1
        # The same tracker log continues; rounds it missed are logged from the history.
        run.tracker = make_tracker(settings.tracking, folder, first_round=run.next_round)
        if run.tracker is not None:
            if not run.tracker.logged_rounds():  # tracking switched on now: a new log
                run.tracker.log_settings(asdict(settings))
            run.tracker.catch_up(run.history)
        return run

    # -- each round ---------------------------------------------------------------------------

    def end_of_round(self, report: RoundReport, arrays: ArrayRecord) -> None:
        """The per-round hook: checkpoint the round's global adapters with the server's
        state, rewrite metrics.json / metrics.png, then log the round to the experiment
        tracker (after the checkpoint, so a resumed run never logs a round twice)."""
        self.history.append(report.as_dict())
        self.arrays = arrays
        self.save_checkpoint(report.round)
        self.write_report()
        if self.tracker is not None:
            self.tracker.log_round(self.history[-1])

    def save_checkpoint(self, server_round: int) -> Path:
        self.rag_system.load_adapter_state_dict(adapter_state(self.arrays))
        state_json, state_arrays = strategy_state(self.strategy)
        numpy_rng = np.random.get_state()
        python_rng = random.getstate()
        state = {
            "round": server_round,
            "settings": asdict(self.settings),
            "history": self.history,
            "strategy": state_json,
            "rng": {"python": [python_rng[0], list(python_rng[1]), python_rng[2]],
                    "numpy": [int(numpy_rng[2]), int(numpy_rng[3]), float(numpy_rng[4])]},
        }  # fmt: skip
        state_arrays["rng/numpy"] = numpy_rng[1]
        target = self.folder / "rounds" / f"round-{server_round:03d}"
        with atomic_directory(target) as tmp:
            self.rag_system.save_pretrained(
                tmp, extra={"server_round": server_round, "run_config": self.run_config},
                include_store=False,
            )  # fmt: skip
            np.savez(tmp / STRATEGY_ARRAYS, **state_arrays)
            write_json_atomic(tmp / SERVER_STATE, state)
        return target

    def record_stop(self, error: TooFewSitesError) -> None:
        """Write the failed round's site records into metrics.json (checkpoints untouched)."""
        self.stops.append(
            {
                "round": error.server_round,
                "reason": str(error),
                "failures": [e.as_dict() for e in error.events],
                "last_checkpoint": str(self._last_round_folder()),
            }
        )
        self.write_report()
        if self.tracker is not None:
            self.tracker.close(finished=False)
            self.tracker = None

    # -- the end -------------------------------------------------------------------------

    def save_final(self, arrays: ArrayRecord) -> Path:
        """The shared system (with the server corpus' store), metrics history and plot."""
        from fedrag_flower.federation.server import model_sizes

        self.rag_system.load_adapter_state_dict(adapter_state(arrays))
        final = self.rag_system.save_pretrained(
            self.folder / "final",
            extra={
                "server_round": self.settings.num_server_rounds,
                "run_config": self.run_config,
                "history": self.history,
            },
            include_store=len(self.rag_system.knowledge_store) > 0,
        )
        self.write_report(sizes=model_sizes(self.rag_system))
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
        return final

    def write_report(self, sizes: dict | None = None) -> None:
        document = {"settings": asdict(self.settings), "history": self.history}
        if sizes:
            document["sizes"] = sizes
        if self.stops:
            document["stops"] = self.stops
        write_report(self.folder, document)

    def _last_round_folder(self) -> Path:
        last = max((h["round"] for h in self.history), default=0)
        return self.folder / "rounds" / f"round-{last:03d}"


def last_checkpoint(folder: Path) -> Path:
    """The complete ``rounds/round-NNN`` with the highest NNN in a run folder."""
    folder = Path(folder)
    rounds = folder / "rounds"
    if not rounds.is_dir():
        raise CheckpointError(
            f"{folder} is not a run folder (no rounds/ inside): give resume-from the "
            "run-<time> folder a run printed"
        )
    found = sorted(
        (int(m.group(1)), p)
        for p in rounds.iterdir()
        if (m := ROUND_FOLDER.match(p.name)) and (p / SERVER_STATE).exists()
        and (p / MANIFEST).exists()
    )  # fmt: skip
    if not found:
        raise CheckpointError(f"{rounds} holds no complete checkpoint to resume from")
    return found[-1][1]


def _read_state(checkpoint: Path) -> dict:
    try:
        state = json.loads((checkpoint / SERVER_STATE).read_text())
        for key in ("round", "settings", "history", "strategy", "rng"):
            state[key]  # noqa: B018 - presence check
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"{checkpoint / SERVER_STATE} is not a fedrag-flower server state "
            f"({type(error).__name__}: {error}); nothing was changed"
        ) from None
    return state


def _fingerprint_mismatch(saved: dict, settings: FederationSettings) -> dict:
    now = asdict(settings)
    return {
        _key(name): {"checkpoint": saved.get(name), "now": now[name]}
        for name in (f.name for f in fields(FederationSettings))
        if name not in RESUMABLE_CHANGES and saved.get(name) != now[name]
    }


def _previous_stops(folder: Path) -> list[dict]:
    try:
        return list(json.loads((folder / "metrics.json").read_text()).get("stops", []))
    except (OSError, ValueError):
        return []


def _key(name: str) -> str:
    return name.replace("_", "-")
