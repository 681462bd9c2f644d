"""``fedrag-flower compare``: untrained, local-only, federated and centralized, side by side.

fedrag-flower compare --run-config "num-server-rounds=3 pairs-per-round=45" --seeds 0 1 2
fedrag-flower compare --arms federated --run-config "strategy='fedprox' proximal-mu=0.01" \
    --output outputs/comparison-fedprox
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``compare`` to ``subparsers``."""
    parser = subparsers.add_parser(
        "compare",
        help="compare untrained, local-only, federated and centralized training",
        description="Train and evaluate, on the default data split across simulated sites: "
        "the untrained system, each site alone, all sites federated and all pairs pooled, "
        "with the same models, optimizer steps per pair and test questions. Every arm runs "
        "in one process through the server's own round loop and strategy, its sites "
        "answering with the ClientApp's own functions and mods. The federated arm "
        "aggregates with the run config's strategy and DP (e.g. \"strategy='fedadam'\" or "
        "\"dp='client-fixed' dp-noise=0.3 dp-clip=0.5\"); local-only and centralized "
        "arms always use plain FedAvg without DP (over one site: its own adapters). "
        "Writes runs/ (one result per arm and seed, recording its aggregation; a rerun "
        "skips finished ones), comparison.json, comparison.md and PNG plots to --output: "
        "use one --output per strategy or DP setting.",
    )
    parser.add_argument(
        "--run-config",
        default="",
        help='run-config overrides, as for `flwr run` (e.g. "num-server-rounds=3 '
        "mode='ralt'\"); defaults: the app's [tool.flwr.app.config]",
    )
    parser.add_argument(
        "--default-data",
        choices=["faq", "passages"],
        help="the default data's variant (run-config key default-data; default: faq)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (0 1 2)")
    parser.add_argument("--sites", type=int, default=3, help="simulated sites (3)")
    parser.add_argument(
        "--output", type=Path, default=Path("outputs/comparison"), help="output folder"
    )
    parser.add_argument(
        "--test-per-site",
        type=int,
        default=0,
        help="only each site's first N test questions (0: all)",
    )
    parser.add_argument(
        "--pairs-per-site", type=int, default=0, help="keep each site's first N pairs (0: all)"
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=["untrained", "local", "federated", "centralized"],
        default=["untrained", "local", "federated", "centralized"],
        help="arms to run (all)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.set_defaults(func=compare)


def compare(args: argparse.Namespace) -> int:
    from fedrag_flower.comparison import ComparisonOptions, run_comparison
    from fedrag_flower.federation.run_config import parse_run_config
    from fedrag_flower.federation.settings import FederationSettings

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    run_config = parse_run_config(args.run_config)
    if args.default_data:
        run_config["default-data"] = args.default_data
    settings = FederationSettings.from_run_config(run_config)
    options = ComparisonOptions(
        settings=settings,
        seeds=tuple(args.seeds),
        num_sites=args.sites,
        output_dir=args.output,
        test_per_site=args.test_per_site,
        pairs_per_site=args.pairs_per_site,
        arms=tuple(args.arms),
    )
    run_comparison(options, log=lambda line: print(line, flush=True))
    print((args.output / "comparison.md").read_text())
    print(f"fedrag-flower: comparison written to {args.output}")
    return 0
