"""A site's memory: what one RALT pass keeps for the backward pass, and the peak resident
memory and speed of RALT for each ``max-tokens-per-pass``.

    python benchmarks/bench_memory.py                          # passes of 1024 and 384 tokens
    python benchmarks/bench_memory.py --passes 1024 512 384 --pairs 45

Each setting trains RALT (the app's defaults: joined context, top 3) on site 0's round-1
pairs in a fresh process, so each peak is that setting's own (``ru_maxrss``). The table of
saved tensors wraps one forward pass on ``--saved-tokens`` tokens in
``torch.autograd.graph.saved_tensors_hooks`` and adds up the storages, by dtype and shape.
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import subprocess
import sys

import torch


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def train_once(max_tokens_per_pass: int, pairs: int) -> dict:
    """RALT on site 0's first ``pairs`` pairs in this process; speed and memory."""
    import dataclasses

    from fedrag_flower.federation.settings import FederationSettings
    from fedrag_flower.federation.site import round_pairs, simulation_site, site_rag_system
    from fedrag_flower.trainers.huggingface.ralt import HuggingFaceTrainerForRALT

    settings = FederationSettings(pairs_per_round=pairs)
    site = simulation_site(0, 3, settings)
    rag = site_rag_system(site, settings)
    rows = round_pairs(site.data.train, settings, 1)
    before = peak_gb()
    args = dataclasses.replace(settings.ralt_args(1), max_tokens_per_pass=max_tokens_per_pass)
    torch.manual_seed(0)
    result = HuggingFaceTrainerForRALT(rag, rows, args).train()
    return {
        "max_tokens_per_pass": max_tokens_per_pass,
        "tokens_per_second": result.tokens_per_second,
        "loss": result.loss,
        "peak_before_gb": before,
        "peak_gb": peak_gb(),
        "bf16": rag.generator.bf16,
    }


def saved_tensors(tokens: int) -> None:
    """Print what autograd saves in one RALT forward pass on ``tokens`` tokens."""
    from fedrag_flower.losses.scoring import target_log_probs
    from fedrag_flower.rag.generator import Generator

    generator = Generator()
    torch.manual_seed(0)
    ids = torch.randint(100, 40000, (1, tokens))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : tokens * 4 // 5] = -100  # a prompt, then a target, as in RALT
    storages: dict[int, int] = {}
    by_kind: collections.Counter = collections.Counter()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in storages:
            storages[storage.data_ptr()] = storage.nbytes()
            shape = tuple("T" if d == tokens else d for d in tensor.shape)
            by_kind[(str(tensor.dtype).removeprefix("torch."), shape)] += storage.nbytes()
        return tensor

    generator.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), generator.autocast():
        target_log_probs(generator.model, ids, mask, labels)
    total = sum(storages.values())
    print(f"\nsaved for backward, one pass of {tokens} tokens (bf16 autocast {generator.bf16}):")
    print(f"{total / 2**20:.0f} MiB in all; by dtype and shape (T = the token axis):")
    for (dtype, shape), size in by_kind.most_common(12):
        print(f"  {size / 2**20:8.1f} MiB  {dtype:9} {shape}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, nargs="+", default=[1024, 384])
    parser.add_argument("--pairs", type=int, default=45, help="site 0's training pairs")
    parser.add_argument("--saved-tokens", type=int, default=380)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(train_once(args.one, args.pairs)))
        return
    print("| max-tokens-per-pass | RALT tokens/s | peak RSS, GB (before training) | loss |")
    print("|---|---|---|---|")
    for tokens in args.passes:
        child = [sys.executable, __file__, "--one", str(tokens), "--pairs", str(args.pairs)]
        out = subprocess.run(child, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"| {tokens} | {r['tokens_per_second']:.0f} | {r['peak_gb']:.2f} "
            f"({r['peak_before_gb']:.2f}) | {r['loss']:.4f} |",
            flush=True,
        )
    saved_tensors(args.saved_tokens)


if __name__ == "__main__":
    main()
