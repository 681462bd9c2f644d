"""Per-round cost of a federated run: wall time, local training per site, framework
overhead, and bytes each site sends next to the full model sizes; and, in deployment, the
fixed cost of each ClientApp message.

Runs `flwr run .` in local simulation (or reads an existing run's metrics.json) and prints
a table. Not a test: figures vary with the machine; compare them as ratios.

    python benchmarks/bench_federation.py                      # a small 3-site, 2-round run
    python benchmarks/bench_federation.py --run-config "pairs-per-round=45 num-server-rounds=3"
    python benchmarks/bench_federation.py --metrics outputs/run-.../metrics.json
    python benchmarks/bench_federation.py --loopback --sites 2  # the deployment topology

``--loopback`` starts the deployment topology of docker-compose.yml as processes on
127.0.0.1 (SuperLink, ServerApp SuperExec, one SuperNode and ClientApp SuperExec per
site; ``fedrag_flower/loopback.py``), each site on its share of the default data
written to files, runs a tiny training budget (``LOOPBACK``), stops every process by PID
and prints, per train message, the ClientApp process' startup by phase (the sites'
``startup-*`` metrics, :mod:`fedrag_flower.federation.startup`): every message starts a
fresh process there. A site builds its index in its first round and loads it after.
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
# Training only, one step a round: the point is the fixed cost of a message.
LOOPBACK = "num-server-rounds=2 local-steps=1 pairs-per-round=4 fraction-evaluate=0.0"
STARTUP_PHASES = ("flower", "imports", "data", "models", "index", "adapters")


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


def run_loopback(run_config: str, sites: int, workdir: Path, timeout: float) -> Path:
    """The run on the loopback deployment; returns its metrics.json."""
    from fedrag_flower.loopback import LoopbackDeployment, SiteSpec

    specs = [
        SiteSpec(f"site-{i}", write_site_files(workdir / "data", i, sites)) for i in range(sites)
    ]
    outputs = workdir / "outputs"
    with LoopbackDeployment(workdir / "deployment", specs) as deployment:
        deployment.start(timeout=120)
        result = deployment.run_app(
            ROOT, run_config=f"{run_config} output-dir='{outputs}'", timeout=timeout
        )
        if result.status != "finished:completed":
            raise RuntimeError(f"run {result.status}:\n{result.logs[-4000:]}\n{deployment}")
    print(f"loopback: {sites} sites, {result.wall_seconds:.1f} s from submission to the end")
    return next(outputs.glob("run-*")) / "metrics.json"


def write_site_files(folder: Path, site: int, sites: int) -> dict:
    """Site ``site``'s share of the default data as corpus/train/test files; returns the
    SuperNode's node config (threads: the host's CPUs shared by the sites)."""
    from fedrag_flower import deployment as dep
    from fedrag_flower.data import partition_default

    data = partition_default(site, sites)
    site_dir = folder / f"site-{site}"
    site_dir.mkdir(parents=True)
    for name, rows in (("corpus", data.corpus), ("train", data.train), ("test", data.test)):
        lines = [json.dumps(row) for row in rows]
        (site_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return dep.site_node_config(
        corpus=str(site_dir / "corpus.jsonl"),
        train=str(site_dir / "train.jsonl"),
        test=str(site_dir / "test.jsonl"),
        data_dir=str(site_dir / "index"),
        name=f"site-{site}",
        threads=dep.site_threads(sites),
    )


def report_startup(metrics_path: Path) -> None:
    """Per train message: the ClientApp process' startup, by phase, in seconds."""
    document = json.loads(metrics_path.read_text())
    columns = ("total", *STARTUP_PHASES, "train", "peak GB")
    print("\nClientApp startup per train message (process creation -> training starts), s;")
    print("peak GB: the ClientApp process' peak resident memory at the end of its round")
    print(f"{'round':>5} {'site':>8} " + " ".join(f"{c:>8}" for c in columns))
    totals = []
    for entry in document["history"]:
        for site in entry["site_train"]:
            m = site["metrics"]
            if not m.get("startup-seconds"):
                continue
            totals.append(m["startup-seconds"])
            values = [m["startup-seconds"], *(m[f"startup-{p}-seconds"] for p in STARTUP_PHASES)]
            values += [m.get("train-seconds", 0.0), m.get("peak-memory-gb", 0.0)]
            print(
                f"{entry['round']:>5} {site.get('site', '?'):>8} "
                + " ".join(f"{v:>8.2f}" for v in values)
            )
    if totals:
        print(f"startup: mean {sum(totals) / len(totals):.2f} s, max {max(totals):.2f} s")


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
    parser.add_argument("--run-config", help=f"default: {SMALL!r}, with --loopback {LOOPBACK!r}")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument(
        "--loopback", action="store_true", help="run on the deployment topology on 127.0.0.1"
    )
    parser.add_argument(
        "--timeout", type=float, default=1200, help="--loopback: longest run, seconds"
    )
    args = parser.parse_args()
    if args.metrics:
        report(args.metrics)
        report_startup(args.metrics)
        return
    with tempfile.TemporaryDirectory() as workdir:
        if args.loopback:
            run_config = args.run_config or LOOPBACK
            if args.sites < 2 and "min-sites" not in run_config:
                run_config += f" min-sites={args.sites}"  # the app's default waits for 2
            metrics = run_loopback(run_config, args.sites, Path(workdir), args.timeout)
        else:
            metrics = run_simulation(args.run_config or SMALL, args.sites, Path(workdir))
        report(metrics)
        report_startup(metrics)


if __name__ == "__main__":
    main()
