"""Checks on the sites' adapter updates before they are aggregated.

A reply is rejected, with a reason naming the tensor, when

1. its keys are not the trained side's keys: every key of the trained side(s) (``generator.*``
   for RALT, ``retriever.*`` for LSR) must be there, and nothing else, except that a reply
   may also carry the untrained side (a clipped reply under client-side DP does);
2. a tensor's shape or dtype differs from the global tensor of that key;
3. a tensor holds NaN or Inf;
4. its update norm is far outside the others': with
   ``||u_i|| = sqrt(sum_k ||w_i[k] - w_global[k]||^2)`` over the trained keys, the reply is
   rejected when ``||u_i|| > norm_factor * median_{j != i} ||u_j||`` (the median over the
   other replies that passed checks 1-3; the check needs at least one other reply, is skipped
   when that median is 0, and ``norm_factor = 0`` turns it off). With 2 sites, the median of
   the others is the other site's norm; a majority of poisoned replies defeats a median, as
   it defeats any rule that trusts the majority.

Plain numpy, no Flower: the strategy calls ``check_updates`` on the replies' ArrayRecords.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NORM_FACTOR = 10.0


@dataclass(frozen=True)
class Rejection:
    """Reply ``index`` (in the list checked) was rejected for ``reason``."""

    index: int
    reason: str


def check_updates(
    global_arrays: Mapping[str, np.ndarray],
    trained_keys: Sequence[str],
    replies: Sequence[Mapping[str, np.ndarray]],
    norm_factor: float = DEFAULT_NORM_FACTOR,
) -> list[Rejection]:
    """The replies to reject, each with its reason (see the module docstring for the rules).

    ``global_arrays``: the tensors sent this round; ``trained_keys``: the keys the sites
    train this round; ``replies``: each reply's tensors by key (numpy arrays).
    """
    trained = set(trained_keys)
    everything = set(global_arrays)
    rejections: list[Rejection] = []
    norms: dict[int, float] = {}
    for index, reply in enumerate(replies):
        reason = _content_problem(global_arrays, trained, everything, reply)
        if reason:
            rejections.append(Rejection(index, reason))
        else:
            norms[index] = update_norm(global_arrays, trained, reply)
    if norm_factor > 0 and len(norms) >= 2:
        for index, norm in norms.items():
            others = float(np.median([n for j, n in norms.items() if j != index]))
            if others > 0 and norm > norm_factor * others:
                rejections.append(
                    Rejection(
                        index,
                        f"update norm {norm:.4g} is more than {norm_factor:g}x the median "
                        f"of the other sites' ({others:.4g})",
                    )
                )
    return sorted(rejections, key=lambda r: r.index)


def update_norm(
    global_arrays: Mapping[str, np.ndarray], keys: set[str] | Sequence[str], reply
) -> float:
    """``sqrt(sum_k ||reply[k] - global[k]||^2)`` over ``keys``, in float64."""
    total = 0.0
    for key in keys:
        diff = np.asarray(reply[key], np.float64) - np.asarray(global_arrays[key], np.float64)
        total += float(np.sum(diff * diff))
    return total**0.5


def _content_problem(global_arrays, trained: set, everything: set, reply) -> str | None:
    keys = set(reply)
    unexpected = sorted(keys - everything)
    if unexpected:
        return f"unexpected keys {unexpected[:3]}" + (" ..." if len(unexpected) > 3 else "")
    if keys != trained and keys != everything:
        missing = sorted(trained - keys)
        if missing:
            return f"missing keys {missing[:3]}" + (" ..." if len(missing) > 3 else "")
        return "keys of a side that was not trained this round, without the other side"
    for key in sorted(keys):
        value, expected = np.asarray(reply[key]), np.asarray(global_arrays[key])
        if value.shape != expected.shape:
            return f"'{key}' has shape {value.shape}, expected {expected.shape}"
        if value.dtype != expected.dtype:
            return f"'{key}' has dtype {value.dtype}, expected {expected.dtype}"
        if not np.all(np.isfinite(value)):
            kind = "NaN" if np.isnan(value).any() else "Inf"
            return f"'{key}' holds {kind}"
    return None
