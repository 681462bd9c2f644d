"""The main job's recipe scored after each round on a validation slice, not the test split.

    python benchmarks/main_job_validation.py all                  # the defaults
    python benchmarks/main_job_validation.py supported --run-config "ralt-supported-only=true"

Three simulated category sites train as the main job does (its run config, FedAvg through
the server's round loop, in one process like ``fedrag-flower compare``). Each site's
validation questions are its first ``--val`` training pairs that none of the run's rounds
trains on (``pairs-per-round`` x rounds of a site's ~134 pairs are used), answered with the
site's own corpus, as the main job's evaluation does. Prints F1, EM, NLL and recall@1 for
the untrained system and after every round, and writes them to ``OUTPUT/NAME.json``; a rerun
resumes an interrupted run from its last round and skips a finished one. ~25 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from fedrag_flower.comparison.arms import FEDERATED, SeedModels, comparison_arms, train_arm
from fedrag_flower.data import SiteData
from fedrag_flower.evaluation.rag_eval import evaluate_rag
from fedrag_flower.federation.run_config import parse_run_config
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, round_pairs, simulation_site

SITES = 3


def validation_sites(settings: FederationSettings, per_site: int, reserve: int = 0) -> list[Site]:
    """The main job's sites with their test questions replaced by unused training pairs.

    ``reserve`` > 0 also keeps the first ``reserve`` pairs of each site's round order out
    of the slice, so runs that train on different numbers of pairs share one slice."""
    sites = []
    for i in range(SITES):
        site = simulation_site(i, SITES, settings)
        used = {
            row["id"]
            for server_round in range(1, settings.num_server_rounds + 1)
            for row in round_pairs(site.data.train, settings, server_round)
        }
        if reserve:
            reserved = replace(settings, pairs_per_round=reserve)
            used |= {row["id"] for row in round_pairs(site.data.train, reserved, 1)}
        held_out = [row for row in site.data.train if row["id"] not in used][:per_site]
        if not held_out:
            raise SystemExit(f"{site.name}: every training pair is used by the run's rounds")
        data = SiteData(site.data.corpus, site.data.train, held_out)
        sites.append(Site(site.name, data, site.store_dir))
    return sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="this variant's name (its JSON file)")
    parser.add_argument("--run-config", default="", help="overrides of the app's run config")
    parser.add_argument("--val", type=int, default=30, help="validation questions per site")
    parser.add_argument(
        "--reserve",
        type=int,
        default=0,
        help="keep each site's first N pairs of the round order out of the slice (compare runs "
        "that train on different numbers of pairs on one slice)",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/main-job-validation"))
    args = parser.parse_args()

    out = args.output / f"{args.name}.json"
    if out.exists():
        print(f"{out} exists: done before")
        return
    args.output.mkdir(parents=True, exist_ok=True)
    settings = FederationSettings.from_run_config(parse_run_config(args.run_config))
    sites = validation_sites(settings, args.val, args.reserve)
    arm = next(a for a in comparison_arms(sites, settings) if a.name == FEDERATED)
    models = SeedModels(settings)

    def evaluate(state) -> dict:
        per_site, totals = {}, {}
        for site in sites:
            system = models.system(site)
            system.load_adapter_state_dict(state)
            ks = sorted({1, settings.top_k})
            metrics = evaluate_rag(system, site.data.test, ks=tuple(ks))
            per_site[site.name] = metrics
            for key in ("f1", "em", "nll", *(f"recall@{k}" for k in ks)):
                totals[key] = totals.get(key, 0.0) + metrics[key] * len(site.data.test)
        count = sum(len(site.data.test) for site in sites)
        overall = {key: value / count for key, value in totals.items()}
        print(", ".join(f"{key} {value:.3f}" for key, value in overall.items()), flush=True)
        return {"all": overall, "sites": per_site}

    print(f"{args.name}: untrained")
    untrained = evaluate(models.initial_state)
    checkpoint = out.with_suffix(".partial.pt")
    _, history = train_arm(arm, models, checkpoint, evaluate)
    document = {
        "name": args.name,
        "run_config": args.run_config,
        "validation_per_site": args.val,
        "reserve": args.reserve,
        "untrained": untrained,
        "rounds": [entry["test"] for entry in history],
    }
    out.write_text(json.dumps(document, indent=1))
    checkpoint.unlink(missing_ok=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
