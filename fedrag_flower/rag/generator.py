"""The generator: a Hugging Face causal LM with a LoRA adapter."""

from __future__ import annotations

import contextlib

import torch
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedrag_flower.models import PACKAGED_GENERATOR, resolve_generator
from fedrag_flower.rag.lora import (
    LoraSettings,
    adapter_state_dict,
    attach_lora,
    trainable_parameters,
)
from fedrag_flower.rag.lora import load_adapter_state_dict as _load_adapter

_DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def cpu_supports_bf16() -> bool:
    """bf16 autocast pays off on CPUs with native bf16 matrix instructions (AVX-512 BF16 or
    AMX); elsewhere it is emulated and slower than fp32."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Generator:
    """A causal LM (any hub id or local path) wrapped with a LoRA adapter; base frozen.

    Weights stay fp32 (the adapter's optimizer state needs it); ``autocast()`` runs the
    matrix products in bf16 where the hardware has it (``bf16=None`` decides by CPU flags,
    or always on CUDA).

    Args:
        model_name_or_path: hub id, local folder, or ``PACKAGED_GENERATOR``.
        lora: adapter settings (default: r=16, alpha=32 on q/k/v/o projections).
        device: torch device.
        bf16: use bf16 autocast; ``None`` chooses by hardware.
    """

    def __init__(
        self,
        model_name_or_path: str = PACKAGED_GENERATOR,
        lora: LoraSettings | None = None,
        device: str = "cpu",
        bf16: bool | None = None,
    ) -> None:
        self.model_name_or_path = model_name_or_path
        self.lora = lora if lora is not None else LoraSettings()
        self.device = device
        path = resolve_generator(model_name_or_path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        base.eval()
        self.model = attach_lora(base, self.lora, _DEFAULT_TARGETS)
        self.model.eval()
        if bf16 is None:
            bf16 = device.startswith("cuda") or cpu_supports_bf16()
        self.bf16 = bf16

    def autocast(self):
        """The training and scoring precision: bf16 autocast, or fp32 where bf16 is off."""
        if not self.bf16:
            return contextlib.nullcontext()
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type, dtype=torch.bfloat16)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return trainable_parameters(self.model, self.lora)

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], max_new_tokens: int = 128) -> list[str]:
        """Greedy answers for tokenized prompts (left-padded into one batch).

        On CPU, decoding is bound by reading the weights once per token: it runs in fp32
        with the adapter merged into the base weights (bf16 autocast would re-cast every
        weight at every step). A single prompt uses prompt-lookup decoding: a RAG answer
        copies spans of its context, which are proposed from the prompt and verified in
        one forward pass; the output is exactly the greedy one.
        """
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        lookup = {"prompt_lookup_num_tokens": 10} if len(prompts) == 1 else {}
        on_cuda = self.bf16 and self.device.startswith("cuda")
        precision = (
            torch.autocast("cuda", dtype=torch.bfloat16) if on_cuda else contextlib.nullcontext()
        )
        with self._adapter_merged(), precision:
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id,
                **lookup,
            )
        return [
            self.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output
        ]

    @contextlib.contextmanager
    def _adapter_merged(self):
        """For the duration, each adapted layer's base weight is replaced by W + BA and the
        adapter is bypassed; afterwards the original weight tensors are put back as they
        were. (PEFT's merge/unmerge adds and subtracts BA in place, which does not give W
        back bit for bit, so each evaluation would drift the frozen base.)"""
        originals = []
        with torch.no_grad():
            for module in self.model.modules():
                if not isinstance(module, LoraLayer) or not module.lora_A:
                    continue
                base = module.get_base_layer()
                weight = base.weight
                delta = sum(module.get_delta_weight(name) for name in module.active_adapters)
                merged = (weight + delta.to(weight.dtype)).detach()
                originals.append((base, weight))
                base.weight = torch.nn.Parameter(merged, requires_grad=False)
        try:
            with self.model.disable_adapter():
                yield
        finally:
            for base, weight in originals:
                base.weight = weight

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return adapter_state_dict(self.model)

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _load_adapter(self.model, state)

    def save_adapter(self, directory: str) -> None:
        """PEFT format: loads with ``PeftModel.from_pretrained(base_model, directory)``."""
        self.model.save_pretrained(directory)

    def load_adapter(self, directory: str) -> None:
        from peft.utils import load_peft_weights

        self.load_adapter_state_dict(load_peft_weights(directory, device=self.device))
