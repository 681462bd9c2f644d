"""Hyperparameters every trainer shares, and keyword overrides of them."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class TrainingArgs:
    """What the training loop needs, whatever the objective.

    Attributes:
        epochs: passes over the training pairs.
        learning_rate: AdamW learning rate of the adapter being trained.
        batch_size: examples per optimizer step (RALT: sequences; LSR: queries).
        max_steps: stop after this many optimizer steps (``None``: run all epochs).
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (0 disables).
        seed: seeds the batch order.
        progress: show a progress bar.
    """

    epochs: int = 1
    learning_rate: float = 2e-4
    batch_size: int = 8
    max_steps: int | None = None
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    progress: bool = True


def with_overrides(args, overrides: dict):
    """Set single fields of a training-args dataclass from keyword arguments."""
    names = {f.name for f in fields(args)}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown training arguments {sorted(unknown)}; known: {sorted(names)}")
    for key, value in overrides.items():
        setattr(args, key, value)
    return args
