"""A run's round metrics as TensorBoard scalars, written live (``tracking = "tensorboard"``)."""

from __future__ import annotations

from pathlib import Path

from fedrag_flower.federation.tracking import ROUND_TAG, Tracker


class TensorBoardTracker(Tracker):
    """Event files in ``log_dir`` (``torch.utils.tensorboard``, which needs the
    ``tensorboard`` package: ``pip install 'fedrag-flower[tracking]'``), flushed after every
    round.

    ``first_round`` > 1 continues a resumed run in the same folder: the new event file starts
    with TensorBoard's ``purge_step`` marker, so steps >= ``first_round`` that the stopped
    run wrote (rounds past its last checkpoint, run again now) are hidden, not doubled.
    """

    def __init__(self, log_dir: str | Path, first_round: int = 1) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError(
                "run-config tracking='tensorboard' needs the tensorboard package: "
                "pip install 'fedrag-flower[tracking]'"
            ) from error
        self.log_dir = Path(log_dir)
        purge_step = first_round if first_round > 1 else None
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        self.writer.flush()  # the purge marker precedes anything read or written next

    def log_settings(self, settings: dict) -> None:
        """The settings as a two-column table under TensorBoard's Text tab (``run/settings``)."""
        rows = "\n".join(f"| {key} | {value} |" for key, value in settings.items())
        self.writer.add_text("run/settings", "| setting | value |\n|---|---|\n" + rows, 0)
        self.writer.flush()

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def logged_rounds(self) -> list[int]:
        return [step for step, _ in read_scalars(self.log_dir).get(ROUND_TAG, [])]

    def close(self, finished: bool = True) -> None:
        self.writer.close()


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files of ``log_dir`` as TensorBoard shows them (purged steps
    left out): tag -> [(step, value)] in the order written."""
    from tensorboard.backend.event_processing.event_accumulator import (
        SCALARS,
        EventAccumulator,
    )

    events = EventAccumulator(str(log_dir), size_guidance={SCALARS: 0})  # 0: keep every step
    events.Reload()
    return {
        tag: [(event.step, event.value) for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
    }
