"""The comparison's figures over seeds: ``comparison.json``, ``comparison.md`` and plots.

Every figure is reported as its mean over seeds with the sample standard deviation
(``std``, 0 for one seed), minimum, maximum and the per-seed values.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path

from fedrag_flower.comparison.arms import (
    CENTRALIZED,
    FEDERATED,
    UNTRAINED,
    aggregation_label,
    local_name,
)
from fedrag_flower.comparison.evaluation import METRICS
from fedrag_flower.federation.settings import FederationSettings

CLAIM_METRICS = ("f1", "recall@1")
"""Metrics the claims of the comparison are checked on."""

GAIN_TARGET = 0.9
"""Federated should reach this share of the centralized gain over the untrained system."""

_LABELS = {
    "f1": "F1",
    "em": "EM",
    "recall@1": "recall@1",
    "recall@3": "recall@3",
    "nll": "NLL/token",
}


def spread(values: list[float]) -> dict:
    """``mean``, sample ``std`` (n - 1 in the denominator; 0 for one value), ``min``,
    ``max``, ``n`` and the ``values`` themselves."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def summarize(results: dict[str, dict[int, dict]], site_names: list[str]) -> dict:
    """Per arm: ``all`` (whole test set) and ``sites`` (each site's own questions), each
    metric as a :func:`spread` over seeds; ``federated_rounds``: the federated system after
    each round (round 0: the untrained one); ``claims``: see :func:`claims`."""
    arms = {}
    for arm, by_seed in results.items():
        runs = [by_seed[seed] for seed in sorted(by_seed)]
        arms[arm] = {
            "seeds": sorted(by_seed),
            "all": {m: spread([r["test"]["all"][m] for r in runs]) for m in METRICS},
            "sites": {
                site: {m: spread([r["test"]["sites"][site][m] for r in runs]) for m in METRICS}
                for site in site_names
                if all(site in r["test"]["sites"] for r in runs)
            },
        }
    summary = {"arms": arms, "federated_rounds": _rounds(results)}
    summary["claims"] = claims(arms, site_names)
    return summary


def _rounds(results: dict[str, dict[int, dict]]) -> list[dict]:
    federated = results.get(FEDERATED, {})
    if not federated:
        return []
    runs = [federated[seed] for seed in sorted(federated)]
    rounds = []
    if UNTRAINED in results:
        untrained = next(iter(results[UNTRAINED].values()))
        rounds.append({"round": 0} | {m: spread([untrained["test"]["all"][m]]) for m in METRICS})
    for i in range(min(len(r["rounds"]) for r in runs)):
        tests = [r["rounds"][i]["test"]["all"] for r in runs]
        rounds.append({"round": i + 1} | {m: spread([t[m] for t in tests]) for m in METRICS})
    return rounds


def claims(arms: dict, site_names: list[str]) -> list[dict]:
    """The claims that joining pays, each with its figures and whether it holds (on
    means over seeds):

    - federated beats each site's local-only system on the whole test set, and on that
      site's own questions (F1 and recall@1: higher);
    - federated reaches >= 90 % of the centralized gain:
      (federated - untrained) / (centralized - untrained) >= 0.9 (undefined, and not
      holding, when centralized gains nothing).
    """
    out = []
    if FEDERATED not in arms:
        return out
    fed = arms[FEDERATED]
    for i, site in enumerate(site_names):
        local = arms.get(local_name(i))
        if local is None:
            continue
        for scope, f, lo in (
            ("whole test set", fed["all"], local["all"]),
            (f"{site}'s own questions", fed["sites"].get(site), local["sites"].get(site)),
        ):
            if not f or not lo:
                continue
            for m in CLAIM_METRICS:
                out.append(
                    {
                        "claim": f"federated beats {local_name(i)} on {scope} ({_LABELS[m]})",
                        "federated": f[m]["mean"],
                        "other": lo[m]["mean"],
                        "holds": f[m]["mean"] > lo[m]["mean"],
                    }
                )
    if CENTRALIZED in arms and UNTRAINED in arms:
        for m in CLAIM_METRICS:
            base = arms[UNTRAINED]["all"][m]["mean"]
            gain_c = arms[CENTRALIZED]["all"][m]["mean"] - base
            gain_f = fed["all"][m]["mean"] - base
            share = gain_f / gain_c if gain_c > 0 else math.nan
            out.append(
                {
                    "claim": f"federated reaches >= {GAIN_TARGET:.0%} of the centralized gain "
                    f"({_LABELS[m]})",
                    "federated": gain_f,
                    "other": gain_c,
                    "share": share,
                    "holds": bool(gain_c > 0 and share >= GAIN_TARGET),
                }
            )
    return out


def write_report(results: dict[str, dict[int, dict]], options, site_names: list[str]) -> dict:
    """Write ``comparison.json`` (settings, every figure per seed and summarized),
    ``comparison.md`` and the plots into ``options.output_dir``; return the document."""
    from fedrag_flower.comparison.plots import plot_rounds, plot_sites

    out = Path(options.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results, site_names)
    document = {
        "options": json.loads(json.dumps(asdict(options), default=str)),
        "sites": site_names,
        "summary": summary,
        "results": {
            arm: {str(s): r for s, r in by_seed.items()} for arm, by_seed in results.items()
        },
    }
    (out / "comparison.json").write_text(json.dumps(document, indent=2))
    plots = []
    if summary["federated_rounds"]:
        plots.append(plot_rounds(summary, out / "federated_rounds.png"))
    if summary["arms"].get(FEDERATED) and any(a.startswith("local-") for a in summary["arms"]):
        plots.append(plot_sites(summary, site_names, out / "sites_own_questions.png"))
    (out / "comparison.md").write_text(markdown(document, [p.name for p in plots]))
    return document


def markdown(document: dict, plots: list[str]) -> str:
    """The report as Markdown: whole-test-set table, per-site table, federated rounds,
    claims."""
    summary, options = document["summary"], document["options"]
    arms = summary["arms"]
    seeds = options["seeds"]
    lines = [
        "# Comparison: untrained, local-only, federated, centralized",
        "",
        f"Seeds {', '.join(map(str, seeds))}: mean ± sample std over seeds (the untrained "
        "system does not depend on the seed). Settings: "
        + ", ".join(f"`{k}={v}`" for k, v in _run_config(options).items()),
        "",
        *_aggregation_lines(document),
        "## Whole test set",
        "",
        "| arm | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for arm in _arm_order(arms):
        cells = [_cell(arms[arm]["all"][m]) for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    site_names = document["sites"]
    if FEDERATED in arms:
        lines += [
            "",
            "## Each site's own test questions",
            "",
            "| site | arm | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
            "|---|---|" + "---|" * len(METRICS),
        ]
        for i, site in enumerate(site_names):
            for arm in (UNTRAINED, local_name(i), FEDERATED, CENTRALIZED):
                figures = arms.get(arm, {}).get("sites", {}).get(site)
                if figures:
                    cells = [_cell(figures[m]) for m in METRICS]
                    lines.append(f"| {site} | {arm} | " + " | ".join(cells) + " |")
    if summary["federated_rounds"]:
        lines += [
            "",
            "## Federated system after each round (whole test set)",
            "",
            "| round | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
            "|---|" + "---|" * len(METRICS),
        ]
        for entry in summary["federated_rounds"]:
            cells = [_cell(entry[m]) for m in METRICS]
            lines.append(f"| {entry['round']} | " + " | ".join(cells) + " |")
    if summary["claims"]:
        lines += ["", "## Claims", ""]
        for claim in summary["claims"]:
            verdict = "holds" if claim["holds"] else "does NOT hold"
            if "share" in claim:
                share = (
                    f"share {claim['share']:.0%}"
                    if claim["other"] > 0
                    else "share undefined: centralized gained nothing"
                )
                figures = (
                    f"gain {claim['federated']:+.3f} vs centralized {claim['other']:+.3f}, {share}"
                )
            else:
                figures = f"{claim['federated']:.3f} vs {claim['other']:.3f}"
            lines.append(f"- {claim['claim']}: {figures}: **{verdict}**")
    if plots:
        lines += ["", *[f"![{name}]({name})" for name in plots]]
    return "\n".join(lines) + "\n"


def _run_config(options: dict) -> dict:
    settings = options["settings"]
    keys = ("num_server_rounds", "mode", "pairs_per_round", "local_epochs", "local_steps")
    shown = {k.replace("_", "-"): settings[k] for k in keys}
    shown |= {"default-data": settings["default_data"], "sites": options["num_sites"]}
    if options["test_per_site"]:
        shown["test-per-site"] = options["test_per_site"]
    if options["pairs_per_site"]:
        shown["pairs-per-site"] = options["pairs_per_site"]
    return shown


def _aggregation_lines(document: dict) -> list[str]:
    """How the federated arm aggregated (and what DP spent), next to the one-site arms'
    plain FedAvg."""
    settings = FederationSettings(**document["options"]["settings"])
    lines = [
        f"Federated arm: `{aggregation_label(settings)}`; local-only and centralized arms: "
        "`fedavg`, no DP (one site: its own adapters).",
        "",
    ]
    federated = document["results"].get(FEDERATED, {})
    spent = [r["privacy"] for _, r in sorted(federated.items()) if "privacy" in r]
    if spent:
        epsilon = ", ".join(f"{p['epsilon']:.3f}" for p in spent)
        lines += [
            f"Privacy spent by the federated arm: epsilon {epsilon} at delta "
            f"{spent[0]['delta']:g} after {spent[0]['releases']} rounds (per seed).",
            "",
        ]
    return lines


def _arm_order(arms: dict) -> list[str]:
    locals_ = sorted((a for a in arms if a.startswith("local-")), key=lambda a: int(a[10:]))
    return [a for a in (UNTRAINED, *locals_, FEDERATED, CENTRALIZED) if a in arms]


def _cell(stats: dict) -> str:
    if stats["n"] > 1:
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"{stats['mean']:.3f}"
