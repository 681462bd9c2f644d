"""One RALT training step on 2 CPU cores, against what the CPU could compute: tokens/s, the
step's FLOPs per token, the rate its matrix products reach, and its top ops by self time.

    python benchmarks/profile_step.py                  # 3 sequences of 330 tokens (joined)
    python benchmarks/profile_step.py --rows 8 --length 180   # parallel RALT's shape

FLOPs per token of a frozen base with LoRA: forward ``2 N`` and backward ``2 N`` (gradients
for the activations only: the frozen weights get none) over the ``N`` weights of the linear
layers, plus attention (``4 L d`` per layer forward, ~2.5x that backward, ``L`` the sequence
length) and the output head on the target tokens only.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from fedrag_flower.losses.ralt import RALTLoss
from fedrag_flower.rag.generator import Generator


def linear_weights(model: torch.nn.Module) -> tuple[int, int]:
    """(weights in the decoder's linear layers, weights of the output head)."""
    head = model.get_output_embeddings()
    decoder = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lora_" not in name and m is not head
    )
    return decoder, head.weight.numel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--length", type=int, default=330)
    parser.add_argument("--target", type=int, default=60, help="target tokens per row")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    generator = Generator()
    model = generator.model
    torch.manual_seed(0)
    ids = torch.randint(100, 40000, (args.rows, args.length))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, : args.length - args.target] = -100
    targets = int((labels[:, 1:] != -100).sum())
    params = generator.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step() -> None:
        with generator.autocast():
            loss = RALTLoss()(model, ids, mask, labels, num_target_tokens=targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    tokens = args.rows * args.length
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    mm_seconds = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm"))
    mm_seconds /= 1e6
    decoder, head = linear_weights(model)
    config = model.config
    d = config.hidden_size
    layers = config.num_hidden_layers
    linear_flops = 4 * decoder * tokens + 4 * head * targets
    attention_flops = 3.5 * 4 * args.length * d * layers * tokens
    flops = linear_flops + attention_flops
    print(f"bf16 autocast: {generator.bf16}; {args.rows} x {args.length} tokens per step")
    print(f"step: {seconds:.3f} s, {tokens / seconds:.0f} tokens/s")
    print(
        f"FLOPs per token: {flops / tokens / 1e6:.0f} M ({linear_flops / tokens / 1e6:.0f} M "
        f"in linear layers and the head, {attention_flops / tokens / 1e6:.0f} M attention); "
        f"the step runs at {flops / seconds / 1e9:.0f} GFLOP/s"
    )
    print(
        f"matrix products (aten::mm): {mm_seconds:.3f} s of the profiled step, "
        f"{linear_flops / mm_seconds / 1e9:.0f} GFLOP/s"
    )
    print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
