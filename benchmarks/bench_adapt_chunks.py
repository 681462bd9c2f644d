"""What ``adapt-chunks`` costs: LSR as a main-job site round runs it, query side only vs
both sides, and re-encoding the store once the adapter has changed.

    python benchmarks/bench_adapt_chunks.py                # 24 queries, 4 passes, 2 repeats

Each variant builds the default system in this process (packaged models, the 503 default
chunks), trains LSR on the first ``--queries`` default training questions (batch 4, top 8,
lr 1e-3, ``--passes`` passes over its cached LM targets), then times
``RAGSystem.refresh_index``: nothing to do for the query side, a full re-encode of the
store for ``adapt_chunks``. Variants alternate, ``--repeats`` times each, so a drift of the
host's speed shows in both. ~3 min on 2 cores.
"""

from __future__ import annotations

import argparse
import time

from fedrag_flower.data import default_qa
from fedrag_flower.rag import RAGConfig, RAGSystem
from fedrag_flower.rag.lora import LoraSettings
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=24, help="LSR training queries")
    parser.add_argument("--passes", type=int, default=4, help="LSR passes (lsr-epochs)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant")
    args = parser.parse_args()

    rows = default_qa("train")[: args.queries]
    for _ in range(args.repeats):
        for adapt in (False, True):
            rag = RAGSystem.from_defaults(
                config=RAGConfig(top_k=3, context_k=3),
                retriever_lora=LoraSettings(r=8, alpha=16),
                adapt_chunks=adapt,
            )
            start = time.perf_counter()
            HuggingFaceTrainerForLSR(
                rag, rows, epochs=args.passes, batch_size=4, top_k=8, learning_rate=1e-3,
                progress=False,
            ).train()  # fmt: skip
            lsr = time.perf_counter() - start
            start = time.perf_counter()
            rag.refresh_index()
            reindex = time.perf_counter() - start
            side = "both sides (adapt_chunks)" if adapt else "query side"
            print(
                f"{side:26s} LSR {lsr:5.1f} s = {lsr / len(rows):.2f} s per query; "
                f"re-encoding {len(rag.knowledge_store)} chunks {reindex:.2f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
