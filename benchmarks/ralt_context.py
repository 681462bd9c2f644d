"""RALT's context on a validation slice: parallel (RA-DIT) vs joined examples, answered with
the top 1 or top ``k`` chunks. Settings are chosen here, never on the test split.

    python benchmarks/ralt_context.py                 # ~15 min on 2 CPU cores
    python benchmarks/ralt_context.py --output outputs/ralt-context
    python benchmarks/ralt_context.py --variants joined --run-config \
        "pairs-per-round=45 lora-freeze-a=true" --output outputs/ralt-context-freeze-a

Validation slice: the default data split over 3 category sites (seed 0, as the comparison
does); each site's round-1 pairs (``pairs-per-round``) are the training pairs, and 27 of its
other training questions are held out (81 in all). Every variant trains one epoch from the
same initial adapters with the retriever untrained, then is evaluated on the held-out
questions (F1, EM, NLL/token, recall) answering with ``context_k`` 1 and ``top_k``. Each
variant writes ``<variant>-k<k>.json`` in ``--output``; a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from fedrag_flower.cache import cache_dir
from fedrag_flower.comparison.arms import SeedModels, pooled_site
from fedrag_flower.data import SiteData
from fedrag_flower.evaluation.rag_eval import evaluate_rag
from fedrag_flower.federation.run_config import parse_run_config
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.federation.site import Site, round_pairs, simulation_site
from fedrag_flower.rag.knowledge_store import KnowledgeStore
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT

HELD_OUT_PER_SITE = 27


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-config", default="pairs-per-round=45", help="as for flwr run")
    parser.add_argument("--output", type=Path, default=Path("outputs/ralt-context"))
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["untrained", "parallel", "joined"],
        choices=["untrained", "parallel", "joined"],
        help="which variants to run and tabulate",
    )
    args = parser.parse_args()
    settings = FederationSettings.from_run_config(parse_run_config(args.run_config))
    sites = [simulation_site(i, 3, settings) for i in range(3)]
    train, held_out = [], []
    for site in sites:
        used = round_pairs(site.data.train, settings, 1)
        ids = {row["id"] for row in used}
        train += used
        held_out += [r for r in site.data.train if r["id"] not in ids][:HELD_OUT_PER_SITE]
    corpus = pooled_site(sites, settings).data.corpus
    name = "validation-" + KnowledgeStore.fingerprint(corpus, "")[:12]
    store_site = Site(name, SiteData(corpus, [], held_out), cache_dir() / "sites" / name)
    models = SeedModels(settings)
    system = models.system(store_site)
    args.output.mkdir(parents=True, exist_ok=True)
    print(f"{len(train)} training pairs, {len(held_out)} held-out questions", flush=True)
    contexts = {"untrained": None, "parallel": "parallel", "joined": "joined"}
    variants = {name: contexts[name] for name in args.variants}
    for variant, context in variants.items():
        ks = (1, settings.top_k)
        todo = [k for k in ks if not (args.output / f"{variant}-k{k}.json").exists()]
        if not todo:
            continue
        system.load_adapter_state_dict(models.initial_state)
        trained = {}
        if context is not None:
            ralt = dataclasses.replace(settings.ralt_args(1), context=context)
            if context == "parallel":  # the same pairs per step as joined
                ralt = dataclasses.replace(ralt, batch_size=settings.batch_size * settings.top_k)
            torch.manual_seed(settings.seed)
            trained = HuggingFaceTrainerForRALT(system, train, ralt).train().metrics()
        for k in todo:
            system.config = dataclasses.replace(settings.rag_config(), context_k=k)
            start = time.perf_counter()
            metrics = evaluate_rag(system, held_out, ks=(1, settings.top_k), batch_size=32)
            metrics |= {"seconds": time.perf_counter() - start, "train": trained}
            path = args.output / f"{variant}-k{k}.json"
            path.write_text(json.dumps(metrics, indent=1))
            print(variant, k, {m: round(v, 3) for m, v in metrics.items() if m != "train"})
    print()
    print("| RALT examples | context_k | F1 | EM | NLL/token | recall@1 | recall@3 |")
    print("|---|---|---|---|---|---|---|")
    for variant in variants:
        for k in (1, settings.top_k):
            m = json.loads((args.output / f"{variant}-k{k}.json").read_text())
            print(
                f"| {variant} | {k} | {m['f1']:.3f} | {m['em']:.3f} | {m['nll']:.3f} | "
                f"{m['recall@1']:.3f} | {m['recall@3']:.3f} |"
            )


if __name__ == "__main__":
    main()
