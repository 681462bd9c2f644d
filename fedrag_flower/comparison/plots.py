"""The comparison's two plots, from its summary (``report.summarize``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedrag_flower.comparison.arms import CENTRALIZED, FEDERATED, local_name

_PANELS = (("f1", "F1"), ("recall@1", "recall@1"), ("nll", "response NLL / token"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rounds(summary: dict, path: Path) -> Path:
    """Federated metrics per round on the whole test set (mean, band of ± std over
    seeds; round 0 is the untrained system), with each local-only site's final level
    (dashed) and the centralized level (solid) as horizontal reference lines."""
    plt = _pyplot()
    rounds = summary["federated_rounds"]
    arms = summary["arms"]
    fig, axes = plt.subplots(1, len(_PANELS), figsize=(4.2 * len(_PANELS), 3.4))
    x = [entry["round"] for entry in rounds]
    locals_ = sorted(a for a in arms if a.startswith("local-"))
    for ax, (metric, title) in zip(axes, _PANELS):
        mean = np.array([entry[metric]["mean"] for entry in rounds])
        std = np.array([entry[metric]["std"] for entry in rounds])
        ax.plot(x, mean, "o-", color="C0", label=FEDERATED)
        ax.fill_between(x, mean - std, mean + std, color="C0", alpha=0.2)
        for j, arm in enumerate(locals_):
            level = arms[arm]["all"][metric]["mean"]
            ax.axhline(level, color=f"C{j + 2}", linestyle="--", label=f"{arm} (final)")
        if CENTRALIZED in arms:
            level = arms[CENTRALIZED]["all"][metric]["mean"]
            ax.axhline(level, color="C1", linestyle="-", label="centralized (final)")
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.set_xticks(x)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sites(summary: dict, site_names: list[str], path: Path) -> Path:
    """Per site, on its own test questions: local-only vs federated (bars: mean over
    seeds, error bars: std)."""
    plt = _pyplot()
    arms = summary["arms"]
    panels = _PANELS[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4))
    x = np.arange(len(site_names))
    width = 0.38
    for ax, (metric, title) in zip(axes, panels):
        for offset, label, arm_of in (
            (-width / 2, "local-only", local_name),
            (width / 2, FEDERATED, lambda i: FEDERATED),
        ):
            means, stds = [], []
            for i, site in enumerate(site_names):
                figures = arms.get(arm_of(i), {}).get("sites", {}).get(site)
                means.append(figures[metric]["mean"] if figures else np.nan)
                stds.append(figures[metric]["std"] if figures else 0.0)
            ax.bar(x + offset, means, width, yerr=stds, capsize=3, label=label)
        ax.set_xticks(x, site_names)
        ax.set_title(f"{title}, own questions")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
