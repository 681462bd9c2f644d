"""Adapter tensors to and from Flower records: the one conversion every path uses."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

ADAPTER_PREFIXES = ("generator.", "retriever.")


def adapter_arrays(state: dict[str, torch.Tensor]) -> ArrayRecord:
    """An ``ArrayRecord`` of prefixed adapter tensors (``generator.*`` / ``retriever.*``).

    Refuses anything else, so no text, embedding or per-example score can ride along.
    """
    bad = [k for k in state if not k.startswith(ADAPTER_PREFIXES)]
    if bad:
        raise ValueError(f"only adapter tensors may leave a site; unexpected keys: {bad[:3]}")
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def adapter_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    """The prefixed adapter tensors held in ``record``."""
    return dict(record.to_torch_state_dict())


def merge_into(previous: ArrayRecord, update: ArrayRecord) -> ArrayRecord:
    """``previous`` with the tensors that ``update`` holds replaced: a round that trains
    only one side (RALT: generator, LSR: retriever) keeps the other side's global tensors."""
    merged = dict(previous.items())
    merged.update(update.items())
    return ArrayRecord(merged)
