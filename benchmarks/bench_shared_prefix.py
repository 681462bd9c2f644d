"""What scoring a batch's shared prefix once saves: LSR as a main-job site round runs it,
and a RALT epoch on RA-DIT's parallel prompts, each with the prefix shared and without.

    python benchmarks/bench_shared_prefix.py                 # 24 LSR queries, 48 RALT pairs

Every default sequence opens with the same system prompt and template tokens (~38 of an
LSR sequence's ~185). ``target_log_probs`` runs them once per batch and lets every row
attend to their keys and values; ``share_prefix=False`` runs each row whole. One process
builds the default system once; the two paths alternate, ``--repeats`` times each (after a
warm-up), so a drift of the host's speed shows in both. LSR: the first ``--queries``
training questions, top 8, batch 4, ``--passes`` passes (the main job's site round);
RALT: the first ``--pairs`` pairs, top 2, parallel prompts, batch 8 (the epoch benchmark's
recipe); both train from the same starting adapters each time. Prints seconds, real
tokens/s and the ratio. ~6 min on 2 cores.
"""

from __future__ import annotations

import argparse
import functools
import time

from fedrag_flower.data import default_qa
from fedrag_flower.losses import ralt as ralt_loss
from fedrag_flower.losses import scoring
from fedrag_flower.rag import RAGConfig, RAGSystem
from fedrag_flower.rag.lora import LoraSettings
from fedrag_flower.trainers.huggingface import lsr as lsr_trainer
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT


def use_shared_prefix(share: bool) -> None:
    """Point both trainers' scoring at ``target_log_probs`` with ``share_prefix=share``."""
    scorer = functools.partial(scoring.target_log_probs, share_prefix=share)
    lsr_trainer.target_log_probs = ralt_loss.target_log_probs = scorer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=24, help="LSR training queries")
    parser.add_argument("--passes", type=int, default=4, help="LSR passes (lsr-epochs)")
    parser.add_argument("--pairs", type=int, default=48, help="RALT training pairs")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each path")
    args = parser.parse_args()

    train = default_qa("train")
    lsr_rows, ralt_rows = train[: args.queries], train[: args.pairs]
    rag = RAGSystem.from_defaults(
        config=RAGConfig(top_k=2, context_k=1), retriever_lora=LoraSettings(r=8, alpha=16)
    )
    initial = {k: v.clone() for k, v in rag.adapter_state_dict().items()}

    def run(kind: str, share: bool) -> tuple[float, float]:
        use_shared_prefix(share)
        rag.load_adapter_state_dict(initial)
        start = time.perf_counter()
        if kind == "LSR":
            result = HuggingFaceTrainerForLSR(
                rag, lsr_rows, epochs=args.passes, batch_size=4, top_k=8, learning_rate=1e-3,
                progress=False,
            ).train()  # fmt: skip
        else:
            result = HuggingFaceTrainerForRALT(
                rag, ralt_rows, top_k=2, context="parallel", batch_size=8, learning_rate=1e-4,
                progress=False,
            ).train()  # fmt: skip
        return time.perf_counter() - start, result.tokens

    for kind in ("LSR", "RALT"):
        run(kind, True)  # warm-up: kernels, bf16 weights
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for share in (False, True):
                elapsed, tokens = run(kind, share)
                seconds[share].append(elapsed)
                per = f"{elapsed / len(lsr_rows):.2f} s per query" if kind == "LSR" else ""
                print(
                    f"{kind:4s} prefix {'shared' if share else 'per row'}: {elapsed:6.1f} s, "
                    f"{tokens / elapsed:6.0f} real tokens/s {per}",
                    flush=True,
                )
        ratio = min(seconds[False]) / min(seconds[True])
        print(f"{kind}: shared prefix {ratio:.2f}x faster (best of {args.repeats} each)")


if __name__ == "__main__":
    main()
