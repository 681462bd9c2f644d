"""Answer and retrieval quality on the default test split (the 101 question ids in
``fedrag_flower/default_split.json``): the untrained system, a saved (e.g. federated)
system, and each site trained alone.

    python benchmarks/quality.py --untrained
    python benchmarks/quality.py --system outputs/run-.../final
    python benchmarks/quality.py --sites-alone 3      # each of 3 category sites, one epoch

Every system is evaluated with the same retrieval corpus (all 503 FAQ answers) and the
same metrics: token F1 and exact match of greedy answers, recall@1/@3 of the gold chunk,
response NLL per token, seconds per answer (batched by 8). Prints one JSON line per
system and a table. Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedrag_flower.data import default_corpus, default_qa, partition_default
from fedrag_flower.evaluation.rag_eval import evaluate_rag
from fedrag_flower.federation.settings import FederationSettings
from fedrag_flower.rag import KnowledgeStore, RAGSystem
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT

COLUMNS = ("f1", "em", "recall@1", "recall@3", "nll", "seconds_per_answer")


def evaluate(name: str, rag: RAGSystem, rows: list[dict]) -> dict:
    start = time.perf_counter()
    metrics = evaluate_rag(rag, rows, ks=(1, 3), progress=True)
    metrics |= {"system": name, "eval_seconds": time.perf_counter() - start}
    print(json.dumps(metrics), flush=True)
    return metrics


def site_alone(site: int, sites: int, settings: FederationSettings, rows: list[dict]) -> dict:
    """One site trains on its own data only, with the same local budget as in the
    federation (its pairs, ``local_epochs``), then answers the whole test split."""
    data = partition_default(site, sites, settings.partitioning, settings.seed)
    rag = RAGSystem.from_defaults(
        corpus=default_corpus(),
        config=settings.rag_config(),
        generator_lora=settings.generator_lora(),
        retriever_lora=settings.retriever_lora(),
    )
    start = time.perf_counter()
    if settings.trains_generator:
        HuggingFaceTrainerForRALT(rag, data.train, settings.ralt_args(1)).train()
    if settings.trains_retriever:
        HuggingFaceTrainerForLSR(rag, data.train, settings.lsr_args(1)).train()
    print(f"site {site} alone: trained in {time.perf_counter() - start:.0f}s", flush=True)
    return evaluate(f"site {site} alone ({len(data.train)} pairs)", rag, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--untrained", action="store_true", help="the untrained default system")
    parser.add_argument("--system", type=Path, action="append", default=[], help="saved system")
    parser.add_argument("--sites-alone", type=int, default=0, help="number of sites (e.g. 3)")
    parser.add_argument("--limit", type=int, default=0, help="first N test questions only")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = default_qa("test")[: args.limit or None]
    results = []
    if args.untrained:
        results.append(evaluate("untrained", RAGSystem.from_defaults(), rows))
    for folder in args.system:
        store = KnowledgeStore.load(folder / "knowledge_store")
        if len(store) != len(default_corpus()):  # always answer from the full FAQ corpus
            raise SystemExit(f"{folder} was saved with another corpus")
        results.append(evaluate(str(folder), RAGSystem.from_pretrained(folder), rows))
    settings = FederationSettings.from_run_config({})
    for site in range(args.sites_alone):
        results.append(site_alone(site, args.sites_alone, settings, rows))
    print(f"\n{'system':<48}" + "".join(f"{c:>12}" for c in COLUMNS))
    for r in results:
        print(f"{r['system'][-48:]:<48}" + "".join(f"{r[c]:>12.3f}" for c in COLUMNS))


if __name__ == "__main__":
    main()
