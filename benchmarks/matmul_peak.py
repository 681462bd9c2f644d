"""The CPU's matrix-product rate in bf16 and fp32: the ceiling every trainer figure is
measured against (a decoder token costs ~2 FLOPs per weight forward, ~2 more backward).

    python benchmarks/matmul_peak.py               # all cores torch uses, ~20 s
    python benchmarks/matmul_peak.py --threads 1

Shapes are SmolLM2-135M's: 2048 rows (a batch of tokens) times square weights of the model's
hidden (576) and MLP (1536) widths, and 2048.
"""

from __future__ import annotations

import argparse
import time

import torch


def rate(rows: int, inner: int, dtype: torch.dtype, seconds: float) -> float:
    """GFLOP/s of ``[rows, inner] @ [inner, inner]`` repeated for about ``seconds``."""
    a = torch.randn(rows, inner, dtype=dtype)
    b = torch.randn(inner, inner, dtype=dtype)
    for _ in range(3):  # warm-up: oneDNN picks and caches its kernel
        a @ b
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        a @ b
        runs += 1
    return 2 * rows * inner * inner * runs / elapsed / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--seconds", type=float, default=1.5, help="per shape and dtype")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} threads")
    for dtype in (torch.bfloat16, torch.float32):
        for inner in (576, 1536, 2048):
            gflops = rate(2048, inner, dtype, args.seconds)
            name = str(dtype).removeprefix("torch.")
            print(f"{name:>8}  2048 x {inner:<4}  {gflops:7.0f} GFLOP/s")


if __name__ == "__main__":
    main()
