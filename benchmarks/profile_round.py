"""Where one site's round goes: a profile of ``train_site`` + ``evaluate_site``.

    python benchmarks/profile_round.py                       # site 0 of 3, defaults
    python benchmarks/profile_round.py --run-config "mode='ralt'"

Runs the same functions a simulated site runs (``site_rag_system``, ``train_site``,
``evaluate_site``) in this process with the app's defaults, and times their parts by
wrapping them: model and index loading, RALT data preparation (retrieval + tokenizing),
forward, backward, optimizer, LSR LM scoring, LSR steps, evaluation (retrieval, NLL,
generation). Also a bare RALT training step on a fixed batch, as the ceiling the round's
RALT throughput is compared with. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import resource
import shlex
import time
from collections import defaultdict

import torch

TIMES: dict[str, float] = defaultdict(float)
CURRENT: list[str] = []


def timed(name: str, fn):
    """``fn`` with its wall time added to ``TIMES[name]`` (outermost timer wins)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if CURRENT:
            return fn(*args, **kwargs)
        CURRENT.append(name)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name] += time.perf_counter() - start
            CURRENT.pop()

    return wrapper


@contextlib.contextmanager
def section(name: str):
    start = time.perf_counter()
    yield
    TIMES[name] += time.perf_counter() - start


def parse_run_config(text: str) -> dict:
    config = {}
    for item in shlex.split(text):
        key, value = item.split("=", 1)
        config[key] = value.strip("'\"")
    return config


def bare_step_tokens_per_second(rag, rows, steps: int = 4) -> float:
    """The library's RALT step on one fixed batch of 8 sequences (top-2 of 4 pairs)."""
    from fedrag_flower.losses.ralt import RALTLoss
    from fedrag_flower.losses.scoring import collate
    from fedrag_flower.trainers.huggingface.ralt import ralt_examples

    generator = rag.generator
    examples = ralt_examples(rag, rows[:4], 2)
    batch = collate(examples, generator.tokenizer.pad_token_id)
    params = generator.trainable_parameters()
    before = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=1e-9)
    generator.model.train()
    for i in range(steps + 1):
        if i == 1:
            start = time.perf_counter()
        with generator.autocast():
            loss = RALTLoss()(generator.model, **batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    generator.model.eval()
    with torch.no_grad():
        for p, b in zip(params, before):
            p.copy_(b)
    return steps * int(batch["attention_mask"].sum()) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=int, default=0)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--round", type=int, default=1)
    parser.add_argument("--run-config", default="", help="overrides, as for flwr run")
    args = parser.parse_args()

    wall = time.perf_counter()
    with section("imports"):
        from fedrag_flower.evaluation import rag_eval
        from fedrag_flower.federation import site as site_module
        from fedrag_flower.federation.settings import FederationSettings
        from fedrag_flower.losses.ralt import RALTLoss
        from fedrag_flower.rag.generator import Generator
        from fedrag_flower.trainers.huggingface import lsr, ralt

    settings = FederationSettings.from_run_config(parse_run_config(args.run_config))
    site = site_module.simulation_site(args.site, args.sites, settings)
    with section("model + index load"):
        rag = site_module.site_rag_system(site, settings)

    ralt.ralt_examples = timed("RALT data preparation", ralt.ralt_examples)
    RALTLoss.forward = timed("RALT forward", RALTLoss.forward)
    torch.Tensor.backward = timed("backward", torch.Tensor.backward)
    torch.optim.AdamW.step = timed("optimizer", torch.optim.AdamW.step)
    lsr.lsr_targets = timed("LSR LM scoring", lsr.lsr_targets)
    lsr.LSRLoss.forward = timed("LSR forward", lsr.LSRLoss.forward)
    rag_eval.response_nll = timed("evaluation: NLL", rag_eval.response_nll)
    Generator.generate = timed("evaluation: generation", Generator.generate)

    with section("train_site total"):
        _, train_metrics = site_module.train_site(rag, site, settings, args.round)
    with section("evaluate_site total"):
        eval_metrics = site_module.evaluate_site(rag, site, settings)
    bare = bare_step_tokens_per_second(rag, site.data.train)
    total = time.perf_counter() - wall

    print(
        f"\nsite {args.site} of {args.sites}, round {args.round}, mode {settings.mode}, "
        f"{torch.get_num_threads()} threads, bf16 autocast {rag.generator.bf16}"
    )
    print("| part | seconds |")
    print("|---|---|")
    for name, seconds in TIMES.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| whole script | {total:.1f} |")
    ralt_tps = train_metrics.get("ralt-tokens_per_second", 0.0)
    print(
        f"\nRALT in the round: {ralt_tps:.0f} real tokens/s; bare step: {bare:.0f} "
        f"({ralt_tps / bare:.2f}x)"
    )
    if "lsr-examples" in train_metrics:
        queries = train_metrics["num-examples"]  # the round's pairs (LSR passes repeat them)
        print(
            f"LSR: {train_metrics['lsr-seconds'] / queries:.2f} s per query "
            f"({train_metrics['lsr-seconds']:.1f} s for {queries:.0f} queries)"
        )
    print("train metrics:", {k: round(v, 3) for k, v in train_metrics.items()})
    print("eval metrics:", {k: round(v, 3) for k, v in eval_metrics.items()})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {peak:.2f} GB")


if __name__ == "__main__":
    main()
