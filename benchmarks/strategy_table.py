"""One Markdown table from several ``fedrag-flower compare`` outputs: the untrained system
and, per output folder, its federated arm (its strategy and DP setting as the row's name).

    python benchmarks/strategy_table.py outputs/strategy-and-dp/*/comparison.json

Columns: F1, EM, recall@1, recall@3 and response NLL per token on the whole test set
(mean ± sample std over seeds when there are several), the privacy spent (epsilon at
delta, after all rounds; DP rows only) and the federated arm's training seconds (mean over
seeds). ``benchmarks/strategy_and_dp.sh`` runs the comparisons and then this.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = (("f1", "F1"), ("em", "EM"), ("recall@1", "recall@1"), ("recall@3", "recall@3"),
           ("nll", "NLL/token"))  # fmt: skip


def _cell(stats: dict) -> str:
    if stats["n"] > 1:
        return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
    return f"{stats['mean']:.3f}"


def _settings_line(document: dict) -> str:
    settings, options = document["options"]["settings"], document["options"]
    keys = ("num_server_rounds", "pairs_per_round", "mode", "partitioning", "default_data")
    shown = [f"{k.replace('_', '-')}={settings[k]}" for k in keys]
    shown.append(f"sites={options['num_sites']}")
    shown.append(f"seeds={','.join(map(str, options['seeds']))}")
    for key in ("pairs_per_site", "test_per_site"):
        if options[key]:
            shown.append(f"{key.replace('_', '-')}={options[key]}")
    return " ".join(shown)


def rows(paths: list[Path]) -> tuple[list[list[str]], set[str]]:
    """The table's rows (untrained first, then each file's federated arm in the order
    given) and the distinct budgets they were run with."""
    untrained, federated, budgets = None, [], set()
    for path in paths:
        document = json.loads(path.read_text())
        arms = document["summary"]["arms"]
        budgets.add(_settings_line(document))
        if "untrained" in arms and untrained is None:
            untrained = ["untrained", *(_cell(arms["untrained"]["all"][m]) for m, _ in METRICS)]
            untrained += ["", ""]
        if "federated" not in arms:
            continue
        runs = list(document["results"]["federated"].values())
        privacy = [r["privacy"] for r in runs if "privacy" in r]
        epsilon = ""
        if privacy:
            values = ", ".join(f"{p['epsilon']:.2f}" for p in privacy)
            epsilon = f"{values} (delta {privacy[0]['delta']:g})"
        seconds = statistics.fmean(r["seconds"] for r in runs)
        cells = [_cell(arms["federated"]["all"][m]) for m, _ in METRICS]
        name = f"federated: {runs[0]['aggregation']}"
        federated.append([name, *cells, epsilon, f"{seconds:.0f}"])
    return ([untrained] if untrained else []) + federated, budgets


def markdown(paths: list[Path]) -> str:
    table, budgets = rows(paths)
    header = ["system", *(label for _, label in METRICS), "epsilon", "train s"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in table),
        "",
    ]
    if len(budgets) == 1:
        lines.append(f"Same budget for every row: `{budgets.pop()}`.")
    else:
        lines.append("WARNING: the rows were run with different budgets:")
        lines += [f"- `{budget}`" for budget in sorted(budgets)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="comparison.json files")
    args = parser.parse_args()
    missing = [str(p) for p in args.files if not p.is_file()]
    if missing:
        raise SystemExit(f"strategy_table: no such comparison.json: {', '.join(missing)}")
    print(markdown(args.files), end="")


if __name__ == "__main__":
    main()
