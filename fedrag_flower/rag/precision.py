"""Which precision training runs in: bf16 autocast where the hardware computes bf16
natively, fp32 elsewhere. One policy for the generator and the retriever."""

from __future__ import annotations

import contextlib
import os

import torch


def cpu_supports_bf16() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 matrix instructions (AVX-512 BF16 or
    AMX); elsewhere it is emulated and slower than fp32.

    ``FEDRAG_BF16=0`` in the environment answers False whatever the CPU: every process
    then takes the fp32 path a CPU without native bf16 takes (to compare the two kinds of
    machine on one host, or to rule bf16 out when chasing a numerical difference);
    ``FEDRAG_BF16=1`` answers True (emulated where the CPU lacks it: slow)."""
    forced = os.environ.get("FEDRAG_BF16", "").strip()
    if forced:
        if forced not in ("0", "1"):
            raise ValueError(f"FEDRAG_BF16 must be 0 or 1 (or unset), got {forced!r}")
        return forced == "1"
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_by_default(device: str) -> bool:
    """Whether training on ``device`` uses bf16 autocast unless told otherwise: always on
    CUDA, on CPU where it has native bf16 (``cpu_supports_bf16``)."""
    return device.startswith("cuda") or cpu_supports_bf16()


def autocast_for(bf16: bool, device: str):
    """bf16 autocast on ``device`` when ``bf16``, else a context that changes nothing."""
    if not bf16:
        return contextlib.nullcontext()
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16)
