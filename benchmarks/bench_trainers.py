"""Speed of the library's RALT and LSR trainers against a naive reference, on the same data.

    python benchmarks/bench_trainers.py                  # 64 RALT pairs, 32 LSR queries
    python benchmarks/bench_trainers.py --pairs 16 --lsr-queries 8 --lsr-epochs 1  # quick
    python benchmarks/bench_trainers.py --pairs 402 --naive-pairs 64  # a whole epoch

With ``--naive-pairs`` smaller than ``--pairs`` the naive RALT runs on the first pairs only
and its seconds per epoch are scaled by real tokens (both paths' costs grow linearly with
tokens; the table says when a figure is scaled).

Prints figures, asserts nothing. The naive reference is written out here, step by step, as
a typical first implementation of RALT and LSR (RA-DIT, Lin et al. 2024; REPLUG, Shi et
al. 2024) would do it:

* RALT: retrieval inside every step (re-encode the batch's queries, search the store), the
  model's own forward with logits at every position (``full_logits_target_log_probs``,
  labels on the target only), fp32 without autocast, batches in random order (no length
  bucketing). Same learning rate, batch size and number of sequences as the library.
* LSR: one LM forward pass per candidate chunk (fp32, full logits), recomputed every
  epoch instead of cached; then the same KL step on the query adapter.

The library runs with its defaults on this machine (bf16 autocast where the CPU has native
bf16, LM head only at target positions, length-bucketed batches, retrieval once per epoch,
LM scores of a query's k candidates in one batched pass, cached for the run).
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import torch

from fedrag_flower.cache import cache_dir
from fedrag_flower.data import default_qa
from fedrag_flower.losses.lsr import LSRLoss, lm_target_distribution
from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.losses.scoring import (
    collate,
    full_logits_target_log_probs,
    sequence_log_likelihoods,
)
from fedrag_flower.rag import RAGSystem
from fedrag_flower.rag.generator import Generator
from fedrag_flower.trainers.huggingface.lsr import HuggingFaceTrainerForLSR
from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT, ralt_examples


def naive_ralt_epoch(
    rag: RAGSystem, rows: list[dict], top_k: int, batch_size: int, lr: float, seed: int
) -> tuple[float, int, int, float]:
    """One epoch of the naive RALT; returns (seconds, real tokens, steps, mean loss)."""
    generator = rag.generator
    params = generator.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=lr)
    pad = generator.tokenizer.pad_token_id
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    pairs_per_step = max(batch_size // top_k, 1)  # same number of sequences per step
    tokens, losses = 0, []
    start = time.perf_counter()
    generator.model.train()
    for i in range(0, len(order), pairs_per_step):
        batch_rows = [rows[j] for j in order[i : i + pairs_per_step]]
        sources = rag.retrieve([r["query"] for r in batch_rows], top_k)  # every step
        examples = [
            rag.prompts.example(r["query"], chunk.text, r["response"])
            for r, chunks in zip(batch_rows, sources)
            for chunk in chunks
        ]
        batch = {k: v.to(generator.device) for k, v in collate(examples, pad).items()}
        loss = -full_logits_target_log_probs(generator.model, **batch)[0].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(batch["attention_mask"].sum())
        losses.append(loss.item())
    generator.model.eval()
    return time.perf_counter() - start, tokens, len(losses), sum(losses) / len(losses)


def naive_lsr(
    rag: RAGSystem,
    rows: list[dict],
    top_k: int,
    epochs: int,
    batch_size: int,
    lr: float,
    gamma: float,
    beta: float,
    seed: int,
) -> tuple[float, float]:
    """Naive LSR; returns (seconds, mean loss)."""
    generator, store, retriever = rag.generator, rag.knowledge_store, rag.retriever
    params = retriever.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=lr)
    loss_fn = LSRLoss(gamma)
    pad = generator.tokenizer.pad_token_id
    rng = random.Random(seed)
    losses = []
    start = time.perf_counter()
    for _ in range(epochs):
        order = list(range(len(rows)))
        rng.shuffle(order)
        for i in range(0, len(order), batch_size):
            batch_rows = [rows[j] for j in order[i : i + batch_size]]
            queries = [r["query"] for r in batch_rows]
            _, positions = store.search(retriever.encode_queries(queries), top_k)
            ll = torch.zeros(len(batch_rows), positions.shape[1])
            with torch.no_grad():
                for n, row in enumerate(batch_rows):
                    for j, p in enumerate(positions[n]):  # one forward per candidate
                        example = rag.prompts.example(row["query"], store.texts[p], row["response"])
                        batch = {
                            k: v.to(generator.device) for k, v in collate([example], pad).items()
                        }
                        log_probs, batch_index = full_logits_target_log_probs(
                            generator.model, **batch
                        )
                        ll[n, j] = sequence_log_likelihoods(log_probs, batch_index, 1, True)[0]
            chunks = torch.from_numpy(store.embeddings[positions])
            query_embeddings = retriever.query_embeddings(queries)
            loss = loss_fn(
                query_embeddings,
                chunks.to(query_embeddings.device),
                lm_target_distribution(ll, beta).to(query_embeddings.device),
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    return time.perf_counter() - start, sum(losses) / len(losses)


def parity(
    rag: RAGSystem, naive: RAGSystem, rows: list[dict], top_k: int, batch_size: int
) -> dict[str, float]:
    """Loss of one batch by the library's fast path and by the plain full-logits path
    (``naive``: the same system over fp32 weights)."""
    generator, fp32 = rag.generator, naive.generator.model
    examples = ralt_examples(rag, rows, top_k)[:batch_size]
    batch = collate(examples, generator.tokenizer.pad_token_id)
    batch = {k: v.to(generator.device) for k, v in batch.items()}
    with torch.no_grad():
        plain = -full_logits_target_log_probs(fp32, **batch)[0].mean().item()
        fast_fp32 = RALTLoss()(fp32, **batch).item()
        with generator.autocast():
            fast_library = RALTLoss()(generator.model, **batch).item()
    return {"plain fp32": plain, "fast fp32": fast_fp32, "fast (library)": fast_library}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64, help="RALT training pairs")
    parser.add_argument("--naive-pairs", type=int, default=0, help="naive RALT pairs (0: --pairs)")
    parser.add_argument("--top-k", type=int, default=2, help="RALT chunks per pair")
    parser.add_argument("--batch-size", type=int, default=8, help="RALT sequences per step")
    parser.add_argument("--lsr-queries", type=int, default=32, help="LSR training queries")
    parser.add_argument("--lsr-top-k", type=int, default=8, help="LSR candidates per query")
    parser.add_argument("--lsr-epochs", type=int, default=2, help="LSR epochs")
    parser.add_argument("--questions", type=int, default=4, help="test questions to answer")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    start = time.perf_counter()
    rag = RAGSystem.from_defaults(store_dir=cache_dir() / "stores" / "default", device=args.device)
    print(
        f"default RAG system loaded in {time.perf_counter() - start:.1f} s "
        f"(bf16 autocast: {rag.generator.bf16})"
    )
    initial = rag.adapter_state_dict()
    # The naive reference runs in fp32, as a plain loop would: over its own copy of the
    # generator with fp32 weights (the library's stores them in bf16 where the CPU has it).
    naive = RAGSystem(
        rag.retriever, rag.knowledge_store, Generator(device=args.device, bf16=False), rag.config
    )
    naive.load_adapter_state_dict(initial)
    train = default_qa("train")
    ralt_rows, lsr_rows = train[: args.pairs], train[: args.lsr_queries]

    # --- RALT: one epoch each, from the same initial adapter
    lib = HuggingFaceTrainerForRALT(
        rag, ralt_rows, epochs=1, top_k=args.top_k, batch_size=args.batch_size, progress=False
    ).train()
    rag.load_adapter_state_dict(initial)
    # The app's default RALT: joined context, one example per pair, as many pairs per step
    joined = HuggingFaceTrainerForRALT(
        rag,
        ralt_rows,
        epochs=1,
        top_k=args.top_k,
        batch_size=max(args.batch_size // args.top_k, 1),
        context="joined",
        progress=False,
    ).train()
    rag.load_adapter_state_dict(initial)
    naive_rows = ralt_rows[: args.naive_pairs] if args.naive_pairs else ralt_rows
    naive_s, naive_tokens, naive_steps, naive_loss = naive_ralt_epoch(
        naive, naive_rows, args.top_k, args.batch_size, 2e-4, seed=0
    )
    scaled = len(naive_rows) < len(ralt_rows)
    if scaled:  # the whole epoch's seconds at the naive path's measured tokens/s
        naive_s_per_token = naive_s / naive_tokens
        naive_s, naive_tokens = naive_s_per_token * lib.tokens, lib.tokens
    naive.load_adapter_state_dict(initial)

    # --- LSR: same epochs, candidates, batch size
    lsr_kwargs = dict(epochs=args.lsr_epochs, top_k=args.lsr_top_k, batch_size=16)
    lsr_lib = HuggingFaceTrainerForLSR(rag, lsr_rows, progress=False, **lsr_kwargs).train()
    rag.load_adapter_state_dict(initial)
    lsr_naive_s, lsr_naive_loss = naive_lsr(
        naive, lsr_rows, args.lsr_top_k, args.lsr_epochs, 16, 1e-4, 0.05, 0.1, seed=0
    )
    rag.load_adapter_state_dict(initial)

    losses = parity(rag, naive, ralt_rows, args.top_k, args.batch_size)

    questions = [row["query"] for row in default_qa("test")[: args.questions]]
    start = time.perf_counter()
    for question in questions:
        rag.query(question)
    per_answer = (time.perf_counter() - start) / len(questions)

    n_lsr = len(lsr_rows) * args.lsr_epochs
    lib_tps, naive_tps = lib.tokens / lib.seconds, naive_tokens / naive_s
    lsr_lib_qps, lsr_naive_qps = n_lsr / lsr_lib.seconds, n_lsr / lsr_naive_s
    print()
    print(f"RALT: {len(ralt_rows)} pairs x {args.top_k} chunks, batch {args.batch_size}, 1 epoch")
    print(
        "      'joined' rows: the app's default RALT (all top-k chunks in one prompt, one "
        f"example per pair, {max(args.batch_size // args.top_k, 1)} pairs per step; "
        "another objective than the naive parallel one it is compared with)"
    )
    if scaled:
        print(
            f"      naive RALT measured on the first {len(naive_rows)} pairs; its seconds per "
            "epoch are scaled to the epoch's real tokens (marked *)"
        )
    print(
        f"LSR:  {len(lsr_rows)} queries x {args.lsr_top_k} candidates, "
        f"{args.lsr_epochs} epochs, batch 16"
    )
    print()
    print(f"| {'measure':<28} | {'library':>10} | {'naive':>10} | {'ratio':>6} |")
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 12}|{'-' * 8}|")
    table = [
        (
            "RALT seconds / epoch" + (" *" if scaled else ""),
            lib.seconds,
            naive_s,
            naive_s / lib.seconds,
        ),
        ("RALT real tokens / s", lib_tps, naive_tps, lib_tps / naive_tps),
        ("RALT steps", lib.steps, naive_steps, None),
        ("RALT joined seconds / epoch", joined.seconds, naive_s, naive_s / joined.seconds),
        ("RALT joined real tokens / s", joined.tokens / joined.seconds, naive_tps, None),
        ("RALT mean train loss", lib.loss, naive_loss, None),
        ("LSR seconds (all epochs)", lsr_lib.seconds, lsr_naive_s, lsr_naive_s / lsr_lib.seconds),
        ("LSR queries / s", lsr_lib_qps, lsr_naive_qps, lsr_lib_qps / lsr_naive_qps),
        ("LSR mean train loss", lsr_lib.loss, lsr_naive_loss, None),
    ]
    for name, a, b, ratio in table:
        ratio_text = f"{ratio:5.2f}x" if ratio is not None else ""
        print(f"| {name:<28} | {a:>10.3f} | {b:>10.3f} | {ratio_text:>6} |")
    print()
    print("Loss of one RALT batch (parity of the fast path):")
    for name, value in losses.items():
        print(f"  {name:<16} {value:.5f}")
    reference = losses["plain fp32"]
    print(
        f"  fast fp32 - plain: {losses['fast fp32'] - reference:+.2e}; "
        f"library - plain: {losses['fast (library)'] - reference:+.2e} "
        f"({abs(losses['fast (library)'] - reference) / reference:.2%})"
    )
    print()
    print(
        f"RAGSystem.query: {per_answer:.2f} s per answer over {len(questions)} test questions "
        f"(max_new_tokens={rag.config.max_new_tokens})"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"peak resident memory of this process: {peak:.2f} GB (it holds two generators: the "
        "library's and the naive loop's fp32 one)"
    )


if __name__ == "__main__":
    main()
