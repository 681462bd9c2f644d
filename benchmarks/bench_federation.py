"""Per-round cost of a federated run: wall time, local training per site, framework
overhead, and bytes each site sends next to the full model sizes.

Runs `flwr run .` in local simulation (or reads an existing run's metrics.json) and prints
a table. Not a test: figures vary with the machine; compare them as ratios.

    python benchmarks/bench_federation.py                      # a small 3-site, 2-round run
    python benchmarks/bench_federation.py --run-config "pairs-per-round=45 num-server-rounds=3"
    python benchmarks/bench_federation.py --metrics outputs/run-.../metrics.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fedrag_flower.processes import stop_local_superlink

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
SMALL = "num-server-rounds=2 pairs-per-round=16 eval-generate=4"


def run_simulation(run_config: str, sites: int, workdir: Path) -> Path:
    flwr_home, outputs = workdir / "flwr-home", workdir / "outputs"
    flwr_home.mkdir(parents=True)
    env = os.environ | {
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
    }
    command = [
        str(BIN / "flwr"), "run", ".", "--stream",
        "--run-config", f"{run_config} output-dir='{outputs}'",
        "--federation-config", f"num-supernodes={sites}",
    ]  # fmt: skip
    try:
        subprocess.run(command, cwd=ROOT, env=env, check=True)
    finally:
        stop_local_superlink(flwr_home)
    return next(outputs.glob("run-*")) / "metrics.json"


def report(metrics_path: Path) -> None:
    document = json.loads(metrics_path.read_text())
    sizes = document["sizes"]
    mb = 1 / 2**20
    print(f"\nrun: {metrics_path.parent}")
    print(
        f"full weights: generator {sizes['generator_full'] * mb:.1f} MiB, "
        f"retriever {sizes['retriever_full'] * mb:.1f} MiB; adapters: generator "
        f"{sizes['generator_adapter'] * mb:.2f} MiB, retriever "
        f"{sizes['retriever_adapter'] * mb:.3f} MiB"
    )
    full = sizes["generator_full"] + sizes["retriever_full"]
    header = f"{'round':>5} {'wall s':>8} {'train s (per site)':>26} {'eval s':>8} "
    header += f"{'overhead s':>10} {'MiB sent/site':>14} {'vs full':>8}"
    print(header)
    for entry in document["history"]:
        train = [site["metrics"].get("train-seconds", 0.0) for site in entry["site_train"]]
        evals = [site["metrics"].get("eval-seconds", 0.0) for site in entry["site_evaluate"]]
        sent = [site.get("bytes", 0) for site in entry["site_train"]]
        wall = entry["seconds"] or 0.0
        # Simulated sites share one worker and run one after another.
        overhead = wall - sum(train) - sum(evals)
        per_site = " ".join(f"{t:.0f}" for t in train)
        mean_sent = sum(sent) / max(len(sent), 1)
        print(
            f"{entry['round']:>5} {wall:>8.1f} {per_site:>26} {sum(evals):>8.1f} "
            f"{overhead:>10.1f} {mean_sent * mb:>14.2f} {mean_sent / full:>8.2%}"
        )
    last = document["history"][-1]["evaluate"]
    print("last round, evaluation:", {k: round(v, 4) for k, v in last.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", type=Path, help="report an existing run's metrics.json")
    parser.add_argument("--run-config", default=SMALL, help=f"default: {SMALL!r}")
    parser.add_argument("--sites", type=int, default=3)
    args = parser.parse_args()
    if args.metrics:
        report(args.metrics)
        return
    with tempfile.TemporaryDirectory() as workdir:
        report(run_simulation(args.run_config, args.sites, Path(workdir)))


if __name__ == "__main__":
    main()
