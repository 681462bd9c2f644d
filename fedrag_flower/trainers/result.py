"""What a trainer's ``train()`` returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainResult:
    """Summary of one ``train()`` call.

    Attributes:
        loss: mean training loss over all steps (RALT: NLL per response token; LSR: KL).
        steps: optimizer steps taken.
        examples: training sequences (RALT) or queries (LSR) seen, epochs included.
        seconds: wall time of the call, retrieval and caching included.
        tokens: non-padding tokens fed to the model (RALT) or scored (LSR).
        tokens_per_second: ``tokens / seconds``.
        history: loss of every step.
    """

    loss: float
    steps: int
    examples: int
    seconds: float
    tokens: int = 0
    tokens_per_second: float = 0.0
    history: list[float] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Scalars only (no history), for logs and Flower metric records."""
        return {k: float(v) for k, v in asdict(self).items() if k != "history"}
