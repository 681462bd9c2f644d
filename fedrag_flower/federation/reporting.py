"""A run's report: ``metrics.json`` (settings, sizes, per-round history) and ``metrics.png``.

Both are written beside their destination and renamed into place, so a run stopped at
any moment leaves the previous complete report, never a half-written one. The report is
rewritten after every round: a stopped run still shows the rounds it finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

METRICS_JSON = "metrics.json"
METRICS_PNG = "metrics.png"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=2, default=_jsonable).encode())


def write_report(folder: Path, document: dict) -> None:
    """``metrics.json`` holding ``document`` and ``metrics.png`` of its ``history``."""
    folder = Path(folder)
    write_json_atomic(folder / METRICS_JSON, document)
    history = document.get("history", [])
    if history:
        fd, tmp = tempfile.mkstemp(prefix=".metrics-", suffix=".png", dir=folder)
        os.close(fd)
        try:
            plot_history(history, Path(tmp))
            os.replace(tmp, folder / METRICS_PNG)
        finally:
            Path(tmp).unlink(missing_ok=True)


# What a round's learning is read by, in the order printed: (label, evaluate-metrics key).
LEARNING_COLUMNS = (
    ("F1", "f1"),
    ("EM", "em"),
    ("recall@1", "recall@1"),
    ("recall@3", "recall@3"),
    ("NLL/token", "nll"),
)


def learning_summary(evaluate: dict) -> str:
    """One round's aggregated evaluation as ``F1 0.605, EM 0.416, ...`` (keys it lacks are
    left out; '' when it has none)."""
    return ", ".join(
        f"{label} {evaluate[key]:.3f}" for label, key in LEARNING_COLUMNS if key in evaluate
    )


def learning_table(history: list[dict]) -> str:
    """The aggregated evaluation of every round as a text table, one row per round; ''
    when no round was evaluated."""
    rows = [h for h in history if h.get("evaluate")]
    columns = [c for c in LEARNING_COLUMNS if any(c[1] in h["evaluate"] for h in rows)]
    if not columns:
        return ""
    lines = ["round " + " ".join(f"{label:>9}" for label, _ in columns)]
    for h in rows:
        cells = [h["evaluate"].get(key) for _, key in columns]
        lines.append(
            f"{h['round']:>5} "
            + " ".join(f"{'-':>9}" if v is None else f"{v:>9.3f}" for v in cells)
        )
    return "\n".join(lines)


def plot_history(history: list[dict], path: Path) -> None:
    """Per-round metrics as a PNG: losses, answer quality, retrieval, likelihood."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("training loss", "train", ["ralt-loss", "lsr-loss"]),
        ("answers", "evaluate", ["f1", "em"]),
        ("retrieval", "evaluate", [k for k in _keys(history, "evaluate") if "recall" in k]),
        ("response NLL / token", "evaluate", ["nll"]),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    rounds = [h["round"] for h in history]
    for ax, (title, part, keys) in zip(axes, panels):
        for key in keys:
            values = [h.get(part, {}).get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(rounds, [np.nan if v is None else v for v in values], "o-", label=key)
        ax.set_title(title)
        ax.set_xlabel("round")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _keys(history: list[dict], part: str) -> list[str]:
    return sorted({k for h in history for k in h.get(part, {})})


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
