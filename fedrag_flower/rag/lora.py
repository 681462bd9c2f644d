"""LoRA settings shared by the generator and the retriever, and adapter tensors in and out."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict


@dataclass
class LoraSettings:
    """LoRA hyperparameters.

    Attributes:
        r: rank of the update matrices.
        alpha: scaling numerator; the update is scaled by ``alpha / r``.
        dropout: dropout on the LoRA input during training. Off by default: PEFT then copies
            every adapted layer's input once more per step, which cost 30 % of a RALT step
            on 2 CPU cores (407 -> 287 tokens/s, r=16 on q/k/v/o, bf16).
        target_modules: names of the linear layers to adapt; empty means the model's usual
            attention projections (``q_proj/k_proj/v_proj/o_proj`` for Llama-style
            generators, ``query/value`` for BERT-style retrievers).
        seed: seed for the initial (random) A matrices, so every site and the server start
            from the same adapter.
        train_a: train the A matrices too (plain LoRA). ``False`` keeps every A at its
            seeded initialisation and trains B alone (FFA-LoRA, Sun et al., ICLR 2024): a
            site then sends only B (``federation.adapters.is_sent_key``), and because all
            sites share A, the mean of their B times A is exactly the mean of their
            updates ``B A``.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)
    seed: int = 0
    train_a: bool = True


def attach_lora(model: torch.nn.Module, settings: LoraSettings, default_targets: list[str]):
    """Wrap ``model`` with a fresh, seeded LoRA adapter; only the adapter trains."""
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules) or default_targets,
        bias="none",
    )
    devices_rng = torch.random.fork_rng(devices=[])
    with devices_rng:
        torch.manual_seed(settings.seed)
        peft_model = get_peft_model(model, config)
    trainable_parameters(peft_model, settings)
    return peft_model


FROZEN_A_MARK = ".lora_A."
"""What the keys of A matrices hold, in PEFT's parameter names and state-dict keys alike."""


def trainable_parameters(model: PeftModel, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """The adapter parameters an optimizer should update. With ``settings.train_a`` off,
    the A matrices are (again) marked as needing no gradient first: PEFT switches every
    adapter parameter back on each time its adapters are re-enabled (as after
    ``disable_adapter()``), which would waste a gradient on each A."""
    if not settings.train_a:
        for name, parameter in model.named_parameters():
            if FROZEN_A_MARK in name:
                parameter.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def adapter_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter's trainable tensors only (PEFT's own key names), detached copies."""
    return {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state_dict(model: PeftModel, state: dict[str, torch.Tensor]) -> None:
    """Put adapter tensors (as returned by ``adapter_state_dict``) into ``model``.

    Raises ``ValueError`` naming the keys when ``state`` does not fit the model's adapter.
    """
    expected = set(get_peft_model_state_dict(model))
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(
            "Adapter tensors do not match this model's adapter: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]} "
            "(were they made with other LoRA settings or another base model?)"
        )
    set_peft_model_state_dict(model, state)
